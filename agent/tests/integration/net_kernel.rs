//! The kernel's own network counters beside the XDP figures, and the XDP parser on frames the
//! test crafts: conntrack fill per namespace, an interface's drop counter, malformed headers.

use crate::net_support;
use crate::support;

use crate::net_support::{
    A_ADDR, B_ADDR, Link, Netns, NsFile, ethernet, have, ipv4_header, send_frames, unique,
};
use crate::support::{Agent, TestCgroup, config_file, parse, path_str, privileged, value};

#[test]
fn conntrack_gauges_follow_the_kernels_count_in_a_test_namespace() {
    if !privileged() {
        return;
    }
    if !have("nft") {
        panic!("nft is missing: `cargo xtask setup` installs Debian's nftables");
    }
    if !std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists() {
        panic!(
            "this kernel has no nf_conntrack (no /proc/sys/net/netfilter/nf_conntrack_count): load the module"
        );
    }
    let _serial = support::serial();
    let link = Link::create();
    // A rule that matches on conntrack state makes the kernel track a's connections.
    link.a.nft("table inet kstrack {\n chain output {\n  type filter hook output priority 0;\n  ct state new counter\n }\n}\n");
    let (_dir, path) =
        config_file(&format!("[network]\ninterface_counters = \"off\"\nnamespaces = [{:?}]\n", link.a.name));
    let agent = Agent::start(&["--config", path_str(&path)]);
    let netns = [("netns", link.a.name.as_str())];
    let kernel_count = || -> f64 {
        link.a.exec(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).trim().parse().unwrap()
    };
    let samples = parse(&agent.scrape());
    let before = value(&samples, "kernsight_conntrack_entries", &netns);
    assert_eq!(before, kernel_count(), "a fresh namespace's table, as the kernel counts it");
    assert_eq!(before, 0.0);
    let limit: f64 =
        link.a.exec(&["cat", "/proc/sys/net/netfilter/nf_conntrack_max"]).trim().parse().unwrap();
    assert_eq!(value(&samples, "kernsight_conntrack_limit", &netns), limit);

    // K datagrams from K sockets: K flows, each an entry (UDP entries live 30 s unreplied).
    const K: usize = 12;
    let cgroup = TestCgroup::create("conntrack");
    let a = NsFile::of(&link.a);
    let code = cgroup.run(|| {
        if !a.enter() {
            return 2;
        }
        for _ in 0..K {
            let fd = net_support::udp_bound(A_ADDR, 0);
            if fd < 0 || net_support::udp_send(fd, B_ADDR, 9999, 1, 8) != 1 {
                return 3;
            }
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2: netns, 3: send)");
    let after = value(&parse(&agent.scrape()), "kernsight_conntrack_entries", &netns);
    let kernel = kernel_count();
    eprintln!(
        "conntrack entries in {}: {before} before, {after} after {K} flows; kernel {kernel}",
        link.a.name
    );
    assert_eq!(after, K as f64, "one entry per flow");
    assert_eq!(after, kernel, "the gauge is the kernel's count");
    // The agent's own namespace is read too.
    assert!(
        parse(&agent.scrape())
            .iter()
            .any(|s| s.name == "kernsight_conntrack_limit" && s.labels["netns"].is_empty())
    );
}

type Frame = Vec<u8>;

/// Well-formed frames, by the protocol they must count under (VLAN tags, IP options, a later
/// fragment, IPv6, ARP), and malformed ones, each claiming a header it does not hold.
fn crafted_frames() -> (Vec<(&'static str, Frame)>, Vec<Frame>) {
    let udp = |length: u16| {
        let mut header = vec![0x30, 0x39, 0x27, 0x0f];
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        header
    };
    let frame = |parts: &[&[u8]]| parts.concat();
    let ip = ethernet(0x0800);
    let vlan = |inner: u16| {
        let mut tagged = ethernet(0x8100);
        tagged.extend_from_slice(&[0, 7]);
        tagged.extend_from_slice(&inner.to_be_bytes());
        tagged
    };
    let ipv6 = |payload_len: u16, next: u8| {
        let mut header = vec![0x60, 0, 0, 0];
        header.extend_from_slice(&payload_len.to_be_bytes());
        header.extend_from_slice(&[next, 64]);
        header.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        header.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        header
    };
    // A TCP header of 20 bytes (data offset 5), SYN.
    let tcp = [0x30, 0x39, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
    let well_formed = vec![
        // 802.1Q-tagged IPv4 UDP with 4 payload bytes.
        ("ipv4_udp", frame(&[&vlan(0x0800), &ipv4_header(0x45, 32, 17, 0), &udp(12), &[1, 2, 3, 4]])),
        // IPv4 with 4 bytes of options (IHL 6), ICMP echo.
        ("ipv4_icmp", frame(&[&ip, &ipv4_header(0x46, 32, 1, 0), &[1, 0, 0, 0], &[8, 0, 0, 0, 0, 1, 0, 1]])),
        // A later fragment of a UDP datagram: no UDP header in it, none looked for.
        ("ipv4_udp", frame(&[&ip, &ipv4_header(0x45, 28, 17, 185), &[0; 8]])),
        // QinQ (802.1ad outer, 802.1Q inner) IPv4 TCP SYN.
        (
            "ipv4_tcp",
            frame(&[
                &ethernet(0x88a8),
                &[0, 1, 0x81, 0],
                &[0, 2, 0x08, 0],
                &ipv4_header(0x45, 40, 6, 0),
                &tcp,
            ]),
        ),
        // IPv4 carrying GRE (47): counted by the IP version.
        ("ipv4_other", frame(&[&ip, &ipv4_header(0x45, 24, 47, 0), &[0; 4]])),
        ("ipv6_udp", frame(&[&ethernet(0x86dd), &ipv6(12, 17), &udp(12), &[9, 9, 9, 9]])),
        ("ipv6_icmp", frame(&[&ethernet(0x86dd), &ipv6(8, 58), &[128, 0, 0, 0, 0, 1, 0, 1]])),
        ("ipv6_tcp", frame(&[&ethernet(0x86dd), &ipv6(20, 6), &tcp])),
        // MLD-like: a hop-by-hop header (router alert) before ICMPv6.
        (
            "ipv6_icmp",
            frame(&[
                &ethernet(0x86dd),
                &ipv6(16, 0),
                &[58, 0, 5, 2, 0, 0, 1, 0],
                &[143, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        // A later fragment of a UDP datagram (offset 100 × 8): no UDP header in it.
        ("ipv6_udp", frame(&[&ethernet(0x86dd), &ipv6(16, 44), &[17, 0, 0x03, 0x20, 0, 0, 0, 9], &[0; 8]])),
        // ARP request for an address nobody has (no reply).
        (
            "arp",
            frame(&[
                &ethernet(0x0806),
                &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 99, 0, 1, 0, 0, 0, 0, 0, 0, 10, 99, 0, 77],
            ]),
        ),
    ];
    let malformed = vec![
        // A VLAN tag announced, nothing after the Ethernet header.
        ethernet(0x8100),
        // QinQ whose inner tag is cut short.
        frame(&[&ethernet(0x88a8), &[0, 1, 0x81, 0], &[0, 2]]),
        // IPv4 header of 10 bytes.
        frame(&[&ip, &ipv4_header(0x45, 20, 17, 0)[..10]]),
        // IHL 3 (12 bytes: below the minimum).
        frame(&[&ip, &ipv4_header(0x43, 28, 17, 0), &udp(8)]),
        // IHL 15 (60 bytes) in a 28-byte packet.
        frame(&[&ip, &ipv4_header(0x4f, 28, 17, 0), &udp(8)]),
        // Version 5.
        frame(&[&ip, &ipv4_header(0x55, 28, 17, 0), &udp(8)]),
        // Total length 1000 in a 28-byte frame.
        frame(&[&ip, &ipv4_header(0x45, 1000, 17, 0), &udp(8)]),
        // Total length 10: shorter than its own header.
        frame(&[&ip, &ipv4_header(0x45, 10, 17, 0), &udp(8)]),
        // TCP with 10 of its 20 header bytes.
        frame(&[&ip, &ipv4_header(0x45, 30, 6, 0), &[0; 10]]),
        // UDP whose length field says 200 in a 16-byte datagram.
        frame(&[&ip, &ipv4_header(0x45, 36, 17, 0), &udp(200), &[0; 8]]),
        // ICMP of 4 bytes.
        frame(&[&ip, &ipv4_header(0x45, 24, 1, 0), &[8, 0, 0, 0]]),
        // A hop-by-hop header claiming 48 bytes in a 16-byte payload.
        frame(&[&ethernet(0x86dd), &ipv6(16, 0), &[58, 5, 0, 0, 0, 0, 0, 0], &[0; 8]]),
        // IPv6 TCP with an empty payload.
        frame(&[&ethernet(0x86dd), &ipv6(0, 6)]),
        // IPv6 whose payload length (500) runs past the frame.
        frame(&[&ethernet(0x86dd), &[0x60, 0, 0, 0, 0x01, 0xf4, 17, 64], &[0; 32], &udp(8)]),
    ];
    (well_formed, malformed)
}

#[test]
fn crafted_frames_are_classified_and_malformed_ones_counted_by_xdp() {
    if !privileged() {
        return;
    }
    crafted_frames_are_classified_and_malformed_ones_counted("xdp", "net_xdp");
}

#[test]
fn crafted_frames_are_classified_and_malformed_ones_counted_by_tc() {
    if !privileged() {
        return;
    }
    crafted_frames_are_classified_and_malformed_ones_counted("tc", "net_tc");
}

/// The parser shared by XDP and TC, on crafted frames arriving on `link`'s b side.
fn crafted_frames_are_classified_and_malformed_ones_counted(counters: &str, probe: &str) {
    let _serial = support::serial();
    let link = Link::create();
    let text =
        format!("[network]\ninterface_counters = {counters:?}\ninterfaces = [{:?}]\n", link.b_xdp_entry());
    let (_dir, path) = config_file(&text);
    let agent = Agent::start(&["--config", path_str(&path)]);
    let (well_formed, malformed) = crafted_frames();
    let well_formed_frames: Vec<Vec<u8>> = well_formed.iter().map(|(_, frame)| frame.clone()).collect();
    // Frames of an EtherType no protocol handles: the stack drops them and counts rx_dropped.
    const UNKNOWN: usize = 7;
    let unknown: Vec<Vec<u8>> = (0..UNKNOWN).map(|_| [ethernet(0x88b5), vec![0; 46]].concat()).collect();
    for frames in [&well_formed_frames, &malformed, &unknown] {
        assert_eq!(send_frames(&link.a, &link.a_if, frames), frames.len(), "AF_PACKET send");
    }
    let samples = parse(&agent.scrape());
    let interface = |protocol| {
        [("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("protocol", protocol)]
    };
    let count = |protocol| value(&samples, "kernsight_interface_packets_total", &interface(protocol));
    let mut expected: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (protocol, _) in &well_formed {
        *expected.entry(protocol).or_default() += 1.0;
    }
    // The stack takes VLAN tags off (skb_vlan_untag) before TC ingress runs, and drops a frame
    // whose tag is cut short there: TC never sees the first malformed frame, XDP (before the
    // stack) does. The other VLAN frames reach TC untagged and are classified the same.
    let unseen = if counters == "tc" { 1 } else { 0 };
    expected.insert("malformed", (malformed.len() - unseen) as f64);
    expected.insert("other", UNKNOWN as f64);
    let seen: std::collections::BTreeMap<&str, f64> = expected.keys().map(|p| (*p, count(p))).collect();
    eprintln!("on {}: {seen:?}", link.b_if);
    // Every frame under its protocol; every malformed frame, and only those, as malformed.
    assert_eq!(seen, expected);
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", probe)]), 1.0);

    // The kernel dropped the unknown frames on b and counted them; kernsight reads that count.
    let dropped = value(
        &samples,
        "kernsight_interface_kernel_drops_total",
        &[("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("direction", "receive")],
    );
    let kernel: f64 = link
        .b
        .proc_net("dev")
        .lines()
        .find_map(|line| {
            let (name, counters) = line.split_once(':')?;
            (name.trim() == link.b_if).then(|| counters.split_whitespace().nth(3)?.parse().ok())?
        })
        .expect("b's interface in /proc/net/dev");
    eprintln!("rx_dropped of {}: kernsight {dropped}, kernel {kernel}", link.b_if);
    assert_eq!(dropped, kernel, "the kernel's own count");
    // The unknown EtherType frames at least (some malformed ones may be counted there too).
    assert!(dropped >= UNKNOWN as f64, "rx_dropped counts the frames no protocol took");
}

/// `rx_dropped` of every interface of a namespace, from its `/proc/net/dev`.
fn rx_dropped(netns: &Netns) -> std::collections::BTreeMap<String, f64> {
    netns
        .proc_net("dev")
        .lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            Some((name.trim().to_owned(), counters.split_whitespace().nth(3)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn per_pod_veths_are_summed_under_other_and_their_counts_outlive_them() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let netns = Netns::create();
    // Three veth pairs named as bridge CNIs name pods' ends (veth*, left out by default), and one
    // pair of the node's own (a series each).
    let pairs: Vec<(String, String)> = (0..3).map(|_| (unique("vethk"), unique("vethk"))).collect();
    let kept = (unique("ksk"), unique("ksk"));
    for (a, b) in pairs.iter().chain([&kept]) {
        netns.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        netns.ip(&["link", "set", a, "up"]);
        netns.ip(&["link", "set", b, "up"]);
    }
    let (_dir, path) =
        config_file(&format!("[network]\ninterface_counters = \"off\"\nnamespaces = [{:?}]\n", netns.name));
    let agent = Agent::start(&["--config", path_str(&path)]);
    // Frames of an EtherType no protocol handles: the receiving end drops them (rx_dropped).
    let unknown =
        |n: usize| -> Vec<Vec<u8>> { (0..n).map(|_| [ethernet(0x88b5), vec![0; 46]].concat()).collect() };
    for (i, (a, _)) in pairs.iter().enumerate() {
        let frames = unknown(5 * (i + 1));
        assert_eq!(send_frames(&netns, a, &frames), frames.len(), "AF_PACKET send on {a}");
    }
    let frames = unknown(4);
    assert_eq!(send_frames(&netns, &kept.0, &frames), frames.len());

    let series = |samples: &[support::Sample]| -> std::collections::BTreeMap<String, f64> {
        samples
            .iter()
            .filter(|s| {
                s.name == "kernsight_interface_kernel_drops_total"
                    && s.labels.get("netns") == Some(&netns.name)
                    && s.labels.get("direction").is_some_and(|d| d == "receive")
            })
            .map(|s| (s.labels["interface"].clone(), s.value))
            .collect()
    };
    let kernel = rx_dropped(&netns);
    let left_out: f64 = kernel.iter().filter(|(name, _)| name.starts_with("vethk")).map(|(_, n)| n).sum();
    assert!(left_out >= 30.0, "5 + 10 + 15 frames dropped on the pods' ends: {kernel:?}");
    let seen = series(&parse(&agent.scrape()));
    eprintln!("kernel: {kernel:?}\nkernsight: {seen:?}");
    let expected: std::collections::BTreeSet<String> =
        ["lo", kept.0.as_str(), kept.1.as_str(), "other"].map(String::from).into();
    assert_eq!(
        seen.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        expected,
        "one series per own interface, one for the rest"
    );
    assert_eq!(seen["other"], left_out, "other is the sum of the kernel's counts of the left-out interfaces");
    assert_eq!(seen[&kept.1], kernel[&kept.1], "an interface of its own keeps its count");
    assert!(seen[&kept.1] >= 4.0);

    // A pod goes: its veth pair with it. Its drops stay in the sum; no series appears or goes.
    netns.ip(&["link", "del", &pairs[2].0]);
    let after = series(&parse(&agent.scrape()));
    assert_eq!(after.keys().collect::<Vec<_>>(), seen.keys().collect::<Vec<_>>());
    assert_eq!(after["other"], left_out, "the counts of the removed pair are kept: no counter reset");
}
