//! The TC slots: a watched interface counts in its slot's row (its index masked by the slot
//! count), and one whose slot another interface holds counts in the hash; either way each
//! interface's counts are exact. Rows are pinned: an interface watched again by the next agent
//! goes on from its count, and a slot given to another interface starts from zero.

use std::path::PathBuf;

use crate::{
    net_support::Link,
    net_tc::{FRAME_HEADERS, exchange},
    support::{self, Agent, Sample, config_file, parse, path_str, privileged, unique_pin_dir, value},
};

/// `kernsight_common::net::TC_TRAFFIC_SLOTS`: indexes 2 and 18 share slot 2.
const SLOTS: u32 = 16;
/// The overflow entries the agent creates in the hash: one per protocol and direction.
const OVERFLOW_ENTRIES: f64 = 22.0;
const PAYLOAD: usize = 200;

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
fn expected(n: u64, m: u64) -> ([u64; 4], [u64; 4]) {
    let frame = FRAME_HEADERS + PAYLOAD as u64;
    ([n, n * frame, m, m * frame], [m, m * frame, n, n * frame])
}

fn map_entries(samples: &[Sample], map: &str) -> f64 {
    value(samples, "kernsight_bpf_map_entries", &[("map", map)])
}

#[test]
fn interfaces_count_exactly_in_their_slots_and_in_the_hash_when_they_share_one() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // a_if 3: a slot of its own. a_if 18: slot 2, which b_if (2, listed first) holds.
    for (a_index, rows, in_hash) in [(3, 2.0, false), (2 + SLOTS, 1.0, true)] {
        let link = Link::with_indexes(a_index, 2);
        let text = format!("[network]\ninterfaces = [{:?}, {:?}]\n", link.b_xdp_entry(), link.a_entry());
        let (_dir, path) = config_file(&text);
        let agent = Agent::start(&["--config", path_str(&path)]);
        const N: u64 = 30;
        const M: u64 = 17;
        exchange(&link, N as usize, M as usize, PAYLOAD);

        let samples = parse(&agent.scrape());
        let (on_b, on_a) =
            (udp_on(&samples, &link.b.name, &link.b_if), udp_on(&samples, &link.a.name, &link.a_if));
        eprintln!("a_if index {a_index}: b_if {on_b:?}, a_if {on_a:?}");
        assert_eq!((on_b, on_a), expected(N, M), "a_if index {a_index}: [received, bytes, sent, bytes]");
        assert_eq!(map_entries(&samples, "NET_TC_ROWS"), rows, "slots in use, a_if index {a_index}");
        let hash = map_entries(&samples, "NET_TC_TRAFFIC");
        // The namespaces are the test's own and silent until the exchange: with both interfaces
        // in rows, the hash holds only its overflow entries.
        if in_hash {
            assert!(hash > OVERFLOW_ENTRIES, "a_if counts in the hash: {hash} entries");
        } else {
            assert_eq!(hash, OVERFLOW_ENTRIES, "nothing counted in the hash");
        }
    }
}

/// Removes a pin directory the test named, also when it fails.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pinned_rows_go_on_for_the_same_interface_and_start_from_zero_for_another() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let pins = PinDir(unique_pin_dir("tc-slots"));
    let pin_dir = path_str(&pins.0).to_owned();
    let link = Link::with_indexes(2 + SLOTS, 2);
    let run = |entry: String, n: u64, m: u64| {
        let (_dir, path) = config_file(&format!("[network]\ninterfaces = [{entry:?}]\n"));
        let agent = Agent::start(&["--pin-dir", &pin_dir, "--config", path_str(&path)]);
        exchange(&link, n as usize, m as usize, PAYLOAD);
        let samples = parse(&agent.scrape());
        assert_eq!(map_entries(&samples, "NET_TC_ROWS"), 1.0, "{entry} has its slot");
        assert!(agent.stop().success(), "clean exit on SIGTERM");
        (udp_on(&samples, &link.b.name, &link.b_if), udp_on(&samples, &link.a.name, &link.a_if))
    };
    let (first, _) = run(link.b_xdp_entry(), 11, 5);
    assert_eq!(first, expected(11, 5).0, "b_if, first agent");
    let (second, _) = run(link.b_xdp_entry(), 7, 3);
    assert_eq!(second, expected(18, 8).0, "b_if, second agent: the pinned row's counts go on");
    // a_if (18) takes slot 2 from b_if (2): its row starts from zero, not from b_if's counts.
    let (_, third) = run(link.a_entry(), 4, 9);
    assert_eq!(third, expected(4, 9).1, "a_if, third agent");
}
