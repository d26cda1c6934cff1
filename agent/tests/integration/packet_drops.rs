//! Packet drops by reason, end to end: UDP to a closed loopback port (on every kernel, also
//! before 5.17, which gives no reasons), and in network namespaces the tests create, UDP to a
//! port with no socket (`NO_SOCKET`) and an nftables rule dropping a process's own datagrams
//! (`NETFILTER_DROP`, attributed to its cgroup because the packet has its socket).

use std::time::Duration;

use crate::support;

use crate::net_support::{A_ADDR, B_ADDR, Link, NsFile, have, udp_bound, udp_send};
use crate::support::{Agent, TestCgroup, parse, privileged, value};

/// This kernel's names, as `skb/kfree_skb/format` spells them (checked by `reason_names`).
const NO_SOCKET: &str = "NO_SOCKET";
const NETFILTER_DROP: &str = "NETFILTER_DROP";

/// What a kernel that gives no reasons (before 5.17) counts every drop as.
const NOT_SPECIFIED: &str = "NOT_SPECIFIED";
const FORMAT: &str = "/sys/kernel/tracing/events/skb/kfree_skb/format";

fn drops(agent: &Agent, reason: &str) -> f64 {
    value(&parse(&agent.scrape()), "kernsight_packet_drops_total", &[("reason", reason)])
}

/// Whether this kernel's `skb:kfree_skb` carries a drop reason (5.17+).
fn kernel_gives_reasons() -> bool {
    std::fs::read_to_string(FORMAT).is_ok_and(|text| text.contains("REC->reason"))
}

#[test]
fn reason_names_come_from_the_running_kernel() {
    let Ok(text) = std::fs::read_to_string(FORMAT) else {
        eprintln!("SKIPPED reason_names_come_from_the_running_kernel: {FORMAT} unreadable");
        return;
    };
    if !text.contains("REC->reason") {
        eprintln!("SKIPPED reason_names_come_from_the_running_kernel: this kernel names no drop reasons");
        return;
    }
    for name in [NO_SOCKET, NETFILTER_DROP] {
        assert!(text.contains(&format!("\"{name}\"")), "{name} is not a drop reason of this kernel");
    }
}

#[test]
fn udp_to_a_closed_loopback_port_is_a_drop_on_every_kernel() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let reason = if kernel_gives_reasons() { NO_SOCKET } else { NOT_SPECIFIED };
    // A port nothing listens on: bound once for its number, then closed.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("a sending socket");
    const N: usize = 50;
    let before = drops(&agent, reason);
    for _ in 0..N {
        sender.send_to(b"kernsight", closed).expect("a datagram to loopback is sent");
    }
    // Loopback delivers in the sender's softirq, almost always before send_to returns.
    let after = support::eventually(Duration::from_secs(10), || {
        let after = drops(&agent, reason);
        if after - before >= N as f64 {
            Ok(after)
        } else {
            Err(format!("{N} datagrams to a closed port, {} {reason} drops counted", after - before))
        }
    });
    // Machine-wide counter: other traffic may add to it, never take away.
    eprintln!("{reason} drops: {before} before, {after} after {N} datagrams to a closed loopback port");
}

#[test]
fn udp_to_a_port_without_socket_is_a_no_socket_drop() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("drop-nosock");
    const N: usize = 40;
    let before = drops(&agent, NO_SOCKET);
    let a = NsFile::of(&link.a);
    let code = cgroup.run(|| {
        if !a.enter() {
            return 2;
        }
        let sender = udp_bound(A_ADDR, 0);
        // Nothing listens on b's port 9: each datagram is dropped on arrival.
        if sender < 0 || udp_send(sender, B_ADDR, 9, N, 64) != N {
            return 3;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2: netns, 3: send)");
    let after = drops(&agent, NO_SOCKET);
    eprintln!(
        "NO_SOCKET drops: {} before, {} after {N} datagrams to a closed port",
        before as u64, after as u64
    );
    // Machine-wide counter: other traffic of the host may add to it, never take away.
    assert!(after - before >= N as f64, "{N} datagrams to a closed port, {} NO_SOCKET drops", after - before);
}

#[test]
fn a_netfilter_drop_is_counted_for_the_sending_cgroup() {
    if !privileged() {
        return;
    }
    if !have("nft") {
        panic!("nft is missing: `cargo xtask setup` installs Debian's nftables");
    }
    let _serial = support::serial();
    let link = Link::create();
    const PORT: u16 = 7777;
    link.a.nft(&format!(
        "table inet ksdrop {{\n chain output {{\n  type filter hook output priority 0;\n  udp dport {PORT} drop\n }}\n}}\n"
    ));
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("drop-nft");
    const N: usize = 25;
    let before = drops(&agent, NETFILTER_DROP);
    let a = NsFile::of(&link.a);
    let code = cgroup.run(|| {
        if !a.enter() {
            return 2;
        }
        let sender = udp_bound(A_ADDR, 0);
        // The output hook drops every datagram: sendto fails with EPERM, after the drop.
        if sender < 0 || udp_send(sender, B_ADDR, PORT, N, 64) != 0 {
            return 3;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2: netns, 3: a datagram got through)");
    let samples = parse(&agent.scrape());
    let of_cgroup = value(
        &samples,
        "kernsight_container_packet_drops_total",
        &[("cgroup", cgroup.label.as_str()), ("reason", NETFILTER_DROP)],
    );
    let total = value(&samples, "kernsight_packet_drops_total", &[("reason", NETFILTER_DROP)]);
    let sent = value(
        &samples,
        "kernsight_container_network_transmit_packets_total",
        &[("cgroup", cgroup.label.as_str())],
    );
    eprintln!("NETFILTER_DROP: {of_cgroup} for the cgroup, {} machine-wide during the test", total - before);
    assert_eq!(of_cgroup, N as f64, "each dropped datagram counted once for its sender's cgroup");
    assert!(total - before >= N as f64);
    assert_eq!(sent, 0.0, "packets dropped before leaving are not counted as transmitted");
}
