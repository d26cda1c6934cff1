//! Network families end to end, on network namespaces and veth pairs the tests create: a
//! counted flow from a process in a test cgroup must show up exactly in the per-cgroup
//! (cgroup_skb) and per-interface (XDP, configured with `interface_counters = "xdp"`; the TC
//! default has its own area, `net_tc`) counters.

use crate::net_support;

use crate::net_support::{A_ADDR, B_ADDR, Link, NsFile, ping, udp_bound, udp_receive, udp_send};
use crate::support::{
    self, Agent, TestCgroup, config_file, parse, path_str, privileged, program_loaded, programs_unloaded,
    value,
};

/// IPv4 and UDP/ICMP header bytes: what cgroup_skb counts on top of the payload.
const IPV4_HEADER: u64 = 20;
const L4_HEADER: u64 = 8;
/// The Ethernet header: what XDP counts on top of the IP packet.
const ETHERNET_HEADER: u64 = 14;

/// Starts an agent that watches `link`'s `b` side with XDP, with the given extra config.
fn agent_watching(link: &Link, extra: &str) -> (Agent, tempfile::TempDir) {
    let text =
        format!("[network]\ninterface_counters = \"xdp\"\ninterfaces = [{:?}]\n{extra}", link.b_xdp_entry());
    let (dir, path) = config_file(&text);
    (Agent::start(&["--config", path_str(&path)]), dir)
}

#[test]
fn a_counted_flow_is_counted_exactly_per_cgroup_and_per_interface() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    let (agent, _config) = agent_watching(&link, "");
    let cgroup = TestCgroup::create("net-flow");
    const N: usize = 50;
    const UDP_PAYLOAD: usize = 200;
    const ICMP_DATA: usize = 56;
    const PORT: u16 = 4242;
    let (a, b) = (NsFile::of(&link.a), NsFile::of(&link.b));
    // The receiving socket lives in b, the sending one in a; both belong to the child's cgroup.
    let code = cgroup.run(|| {
        if !b.enter() {
            return 2;
        }
        let receiver = udp_bound(B_ADDR, PORT);
        if receiver < 0 || !a.enter() {
            return 3;
        }
        let sender = udp_bound(A_ADDR, 0);
        if sender < 0 || udp_send(sender, B_ADDR, PORT, N, UDP_PAYLOAD) != N {
            return 4;
        }
        if udp_receive(receiver, N) != N {
            return 5;
        }
        if ping(B_ADDR, N, ICMP_DATA) != N {
            return 6;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2-3: namespaces, 4: send, 5: receive, 6: ping)");

    let samples = parse(&agent.scrape());
    let n = N as u64;
    let udp_packet = IPV4_HEADER + L4_HEADER + UDP_PAYLOAD as u64;
    let icmp_packet = IPV4_HEADER + L4_HEADER + ICMP_DATA as u64;
    let of_cgroup = [("cgroup", cgroup.label.as_str())];
    let sent = value(&samples, "kernsight_container_network_transmit_packets_total", &of_cgroup);
    let sent_bytes = value(&samples, "kernsight_container_network_transmit_bytes_total", &of_cgroup);
    let received = value(&samples, "kernsight_container_network_receive_packets_total", &of_cgroup);
    let received_bytes = value(&samples, "kernsight_container_network_receive_bytes_total", &of_cgroup);
    eprintln!("cgroup: sent {sent} packets / {sent_bytes} bytes, received {received} / {received_bytes}");
    // Sent: N datagrams and N echo requests. Received: the N datagrams (b's socket) and the N
    // echo replies (the raw socket). IP packet lengths, as cgroup_skb sees them.
    assert_eq!(sent as u64, 2 * n, "packets sent by the cgroup");
    assert_eq!(sent_bytes as u64, n * (udp_packet + icmp_packet), "bytes sent by the cgroup");
    assert_eq!(received as u64, 2 * n, "packets received by the cgroup's sockets");
    assert_eq!(
        received_bytes as u64,
        n * (udp_packet + icmp_packet),
        "bytes received by the cgroup's sockets"
    );

    // XDP on b's interface sees what arrives there: the datagrams and the echo requests.
    let interface = |protocol| {
        [("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("protocol", protocol)]
    };
    let udp = value(&samples, "kernsight_interface_packets_total", &interface("ipv4_udp"));
    let udp_bytes = value(&samples, "kernsight_interface_bytes_total", &interface("ipv4_udp"));
    let icmp = value(&samples, "kernsight_interface_packets_total", &interface("ipv4_icmp"));
    let icmp_bytes = value(&samples, "kernsight_interface_bytes_total", &interface("ipv4_icmp"));
    let malformed = value(&samples, "kernsight_interface_packets_total", &interface("malformed"));
    eprintln!("xdp on {}: udp {udp} / {udp_bytes} bytes, icmp {icmp} / {icmp_bytes} bytes", link.b_if);
    assert_eq!(udp as u64, n, "UDP frames on {}", link.b_if);
    assert_eq!(udp_bytes as u64, n * (ETHERNET_HEADER + udp_packet));
    assert_eq!(icmp as u64, n, "ICMP frames on {}", link.b_if);
    assert_eq!(icmp_bytes as u64, n * (ETHERNET_HEADER + icmp_packet));
    assert_eq!(malformed, 0.0, "well-formed frames classified as malformed");
    let native = value(
        &samples,
        "kernsight_interface_xdp_info",
        &[("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("mode", "native")],
    );
    assert_eq!(native, 1.0, "veth supports native XDP; the mode is reported");
    assert!(agent.log().contains("XDP attached"), "the attachment is logged");
}

#[test]
fn a_missing_interface_is_reported_and_the_rest_runs() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    for (counters, probe, info) in
        [("tc", "net_tc", "kernsight_interface_tc_info"), ("xdp", "net_xdp", "kernsight_interface_xdp_info")]
    {
        let text =
            format!("[network]\ninterface_counters = {counters:?}\ninterfaces = [\"ks-no-such-if\"]\n");
        let (_dir, path) = config_file(&text);
        // Not ready, and /readyz says which family failed and why.
        let agent = Agent::launch(&["--config", path_str(&path)]);
        let why = agent.wait_readyz(503);
        assert!(why.contains(&format!("{probe}: ")) && why.contains("ks-no-such-if"), "{why}");
        let samples = parse(&agent.scrape());
        assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", probe)]), 0.0);
        let failed = [("interface", "ks-no-such-if"), ("netns", ""), ("mode", "failed")];
        assert_eq!(value(&samples, info, &failed), 1.0, "the failed interface is listed");
        assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "net_cgroup")]), 1.0);
        assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "syscalls")]), 1.0);
        let log = agent.log();
        assert!(log.contains("no interface ks-no-such-if in this network namespace"), "{log}");
    }
}

#[test]
fn by_default_tc_watches_the_interfaces_of_the_default_routes() {
    if !privileged() {
        return;
    }
    let routes = net_support::sh("ip", &["-4", "route", "show", "default"]);
    let Some(interface) = routes.split_whitespace().skip_while(|w| *w != "dev").nth(1).map(str::to_owned)
    else {
        support::skip("no IPv4 default route");
        return;
    };
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let samples = parse(&agent.scrape());
    let modes = |name: &str| -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.name == name && s.labels["interface"] == interface)
            .map(|s| s.labels["mode"].clone())
            .collect()
    };
    let (tc, xdp) = (modes("kernsight_interface_tc_info"), modes("kernsight_interface_xdp_info"));
    eprintln!("default route via {interface}: TC mode {tc:?}, XDP mode {xdp:?}");
    assert!(matches!(&tc[..], [m] if m == "tcx" || m == "clsact"), "{interface}: {tc:?}\n{}", agent.log());
    assert!(xdp.is_empty(), "XDP is not attached by default: {xdp:?}");
}

#[test]
fn sigterm_detaches_the_xdp_and_cgroup_programs() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    let (agent, _config) = agent_watching(&link, "");
    let log = agent.log();
    let ids: Vec<u32> =
        ["net_cgroup", "net_xdp"].iter().flat_map(|probe| support::logged_program_ids(&log, probe)).collect();
    assert_eq!(ids.len(), 3, "ingress, egress and XDP program ids in the log:\n{log}");
    let has_xdp = || link.b.ip(&["link", "show", "dev", &link.b_if]).contains("xdp");
    assert!(has_xdp(), "XDP is on {} while the agent runs", link.b_if);
    assert!(ids.iter().all(|&id| program_loaded(id)));

    assert!(agent.stop().success(), "clean exit on SIGTERM");
    assert!(!has_xdp(), "XDP is gone from {} once the agent stopped", link.b_if);
    programs_unloaded(&ids);
}

#[test]
fn xdp_on_a_bridge_port_counts_traffic_that_only_passes_through() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let net = net_support::Bridged::create();
    let entry = format!("{}:{}", net.switch.name, net.port_a);
    let (_dir, path) =
        config_file(&format!("[network]\ninterface_counters = \"xdp\"\ninterfaces = [{entry:?}]\n"));
    let agent = Agent::start(&["--config", path_str(&path)]);
    let cgroup = TestCgroup::create("net-bridge");
    const N: usize = 30;
    const PAYLOAD: usize = 500;
    const PORT: u16 = 4343;
    let (a, b) = (NsFile::of(&net.a), NsFile::of(&net.b));
    let code = cgroup.run(|| {
        if !b.enter() {
            return 2;
        }
        let receiver = udp_bound(B_ADDR, PORT);
        if receiver < 0 || !a.enter() {
            return 3;
        }
        let sender = udp_bound(A_ADDR, 0);
        if sender < 0 || udp_send(sender, B_ADDR, PORT, N, PAYLOAD) != N || udp_receive(receiver, N) != N {
            return 4;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2-3: namespaces, 4: send or receive)");
    let samples = parse(&agent.scrape());
    let on_port =
        [("interface", net.port_a.as_str()), ("netns", net.switch.name.as_str()), ("protocol", "ipv4_udp")];
    let frames = value(&samples, "kernsight_interface_packets_total", &on_port);
    let bytes = value(&samples, "kernsight_interface_bytes_total", &on_port);
    let sent =
        value(&samples, "kernsight_container_network_transmit_packets_total", &[("cgroup", &cgroup.label)]);
    eprintln!("bridge port {}: {frames} UDP frames, {bytes} bytes; the cgroup sent {sent}", net.port_a);
    let packet = IPV4_HEADER + L4_HEADER + PAYLOAD as u64;
    assert_eq!(frames as u64, N as u64, "every datagram crossed the bridge port");
    assert_eq!(bytes as u64, N as u64 * (ETHERNET_HEADER + packet));
    assert_eq!(sent as u64, N as u64, "and left the sender's socket once");
}

#[test]
fn a_full_cgroup_traffic_map_counts_into_other_and_says_so() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    // 16 entries, 2 of them the overflow ones: fewer than the cgroups below.
    let (agent, _config) = agent_watching(&link, "cgroup_traffic_max_entries = 16\n");
    const CGROUPS: usize = 20;
    let cgroups: Vec<TestCgroup> =
        (0..CGROUPS).map(|i| TestCgroup::create(&format!("net-full-{i}"))).collect();
    let a = NsFile::of(&link.a);
    for cgroup in &cgroups {
        let code = cgroup.run(|| {
            if !a.enter() {
                return 2;
            }
            let sender = udp_bound(A_ADDR, 0);
            if sender < 0 || udp_send(sender, B_ADDR, 9, 1, 32) != 1 {
                return 3;
            }
            0
        });
        assert_eq!(code, 0, "the workload failed (2: netns, 3: send)");
    }
    let samples = parse(&agent.scrape());
    let sent = |cgroup: &str| {
        value(&samples, "kernsight_container_network_transmit_packets_total", &[("cgroup", cgroup)])
    };
    let with_series = cgroups.iter().filter(|c| sent(&c.label) == 1.0).count();
    let other = sent("other");
    let full = value(&samples, "kernsight_bpf_map_full_total", &[("map", "NET_CGROUP_TRAFFIC")]);
    eprintln!(
        "{with_series} of {CGROUPS} cgroups got an entry; other: {other} packets; map full {full} times"
    );
    assert!(with_series < CGROUPS, "16 entries cannot hold {CGROUPS} cgroups");
    let without = (CGROUPS - with_series) as f64;
    assert!(other >= without, "each datagram of a cgroup without an entry is in cgroup=\"other\"");
    assert!(full >= without, "and each one found the map full");
}
