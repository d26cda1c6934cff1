//! Packet drops by reason, end to end, in network namespaces the tests create: UDP to a port
//! with no socket (`NO_SOCKET`), and an nftables rule dropping a process's own datagrams
//! (`NETFILTER_DROP`, attributed to its cgroup because the packet has its socket).

use crate::support;

use crate::net_support::{A_ADDR, B_ADDR, Link, NsFile, have, udp_bound, udp_send};
use crate::support::{Agent, TestCgroup, parse, privileged, value};

/// This kernel's names, as `skb/kfree_skb/format` spells them (checked by `reason_names`).
const NO_SOCKET: &str = "NO_SOCKET";
const NETFILTER_DROP: &str = "NETFILTER_DROP";

fn drops(agent: &Agent, reason: &str) -> f64 {
    value(&parse(&agent.scrape()), "kernsight_packet_drops_total", &[("reason", reason)])
}

#[test]
fn reason_names_come_from_the_running_kernel() {
    let format = std::path::Path::new("/sys/kernel/tracing/events/skb/kfree_skb/format");
    let Ok(text) = std::fs::read_to_string(format) else {
        eprintln!("SKIPPED reason_names_come_from_the_running_kernel: {} unreadable", format.display());
        return;
    };
    for name in [NO_SOCKET, NETFILTER_DROP] {
        assert!(text.contains(&format!("\"{name}\"")), "{name} is not a drop reason of this kernel");
    }
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
