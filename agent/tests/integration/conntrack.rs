//! conntrack per pod, in network namespaces the test makes: a "node" namespace with conntrack
//! on and a masquerade rule, a "pod" namespace routed through it (its process in a cgroup named
//! like a container's), and a server behind the node. The pod's connections in the node's table
//! are attributed to it and counted as translated toward the server; filling the pod's own
//! table past `nf_conntrack_max` shows as evictions in its statistics.

use std::{collections::BTreeMap, time::Duration};

use std::net::Ipv4Addr;

use crate::net_support::{Link, Netns, NsFile, have, sh, tcp_connect, tcp_listen, unique};
use crate::support::{
    self, Agent, TestCgroup, config_file, path_str, privileged, spawn_in, unified_root, value,
};

/// A ruleset whose `ct state` expression turns conntrack on in its namespace (since 4.10 the
/// kernel tracks a namespace's packets only once a rule needs it).
const TRACK: &str = "table inet kernsight_test {
  chain track { type filter hook prerouting priority 0; ct state new counter; }
  chain out { type filter hook output priority 0; ct state new counter; }
}
";

/// Connections the pod keeps open to the node (the listener's backlog is 16).
const CONNECTIONS: usize = 12;
const PORT: u16 = 5301;

/// `/proc/net/stat/nf_conntrack` of a namespace: column → sum over CPUs.
fn kernel_stats(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let mut sums = BTreeMap::new();
    for line in lines {
        for (name, v) in header.iter().zip(line.split_whitespace()) {
            *sums.entry((*name).to_owned()).or_default() += u64::from_str_radix(v, 16).unwrap();
        }
    }
    sums
}

fn count_of(netns: &crate::net_support::Netns) -> u64 {
    netns.exec(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).trim().parse().unwrap()
}

/// Where the pod's connections go, behind the node: a third namespace, `c`.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const NODE_UPLINK: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);

#[test]
fn a_pods_connections_are_attributed_to_it_and_its_table_overflow_is_counted() {
    if !privileged() {
        return;
    }
    assert!(have("nft"), "nft is missing: `cargo xtask setup` installs Debian's nftables");
    let _serial = support::serial();
    // b (the pod, 10.99.0.2) → a (the node, 10.99.0.1; 10.98.0.1 toward c, masquerading) → c
    // (a server, 10.98.0.2): the way a pod's traffic leaves a node.
    let link = Link::create();
    let server = Netns::create();
    let (uplink, server_if) = (unique("ksu"), unique("kss"));
    sh(
        "ip",
        &[
            "link",
            "add",
            &uplink,
            "netns",
            &link.a.name,
            "type",
            "veth",
            "peer",
            "name",
            &server_if,
            "netns",
            &server.name,
        ],
    );
    link.a.ip(&["addr", "add", "10.98.0.1/24", "dev", &uplink]);
    server.ip(&["addr", "add", "10.98.0.2/24", "dev", &server_if]);
    link.a.ip(&["link", "set", &uplink, "up"]);
    server.ip(&["link", "set", &server_if, "up"]);
    link.a.sysctl("net.ipv4.ip_forward", "1");
    link.b.ip(&["route", "add", "default", "via", "10.99.0.1"]);
    link.a.nft(&format!(
        "{TRACK}table ip kernsight_nat {{\n  chain post {{ type nat hook postrouting priority 100; oifname \"{uplink}\" masquerade; }}\n}}\n"
    ));
    let (_dir, config) = config_file(&format!("[network]\nnamespaces = [\"{}\"]\n", link.a.name));
    let agent = Agent::start(&["--config", path_str(&config)]);

    let listener = NsFile::of(&server).run(|| tcp_listen(SERVER, PORT));
    assert!(listener >= 0, "listen on {SERVER}:{PORT}");

    let id = "c7".repeat(32);
    let parent = TestCgroup::create_in(&unified_root(), "conntrack");
    let container = parent.child(&format!("docker-{id}.scope"));
    let pod = NsFile::of(&link.b);
    let pid = spawn_in(&container.path, || {
        if !pod.enter() {
            return 2;
        }
        for _ in 0..CONNECTIONS {
            if tcp_connect(SERVER, PORT) < 0 {
                return 3;
            }
        }
        // Hold the connections until the cgroup is removed.
        // SAFETY: a raw syscall: wait for the signal that ends the test.
        unsafe { libc::pause() };
        0
    });
    assert!(pid > 0);
    support::eventually(Duration::from_secs(10), || match count_of(&link.a) {
        n if n >= CONNECTIONS as u64 => Ok(()),
        n => Err(format!("{n} entries in the node's table")),
    });
    let kernel = count_of(&link.a);
    assert_eq!(kernel, CONNECTIONS as u64, "only the pod's connections are in the node's table");

    let short = &id[..12];
    let in_node = [("container", short), ("netns", link.a.name.as_str())];
    let samples = agent.scrape_until(Duration::from_secs(25), |s| {
        let n = value(s, "kernsight_pod_conntrack_node_entries", &in_node);
        if n == kernel as f64 { Ok(()) } else { Err(format!("{n} entries attributed to the pod")) }
    });
    // The host's own table has none of 10.99.0.2's; the pod's own table tracks nothing yet.
    assert_eq!(
        value(&samples, "kernsight_pod_conntrack_node_entries", &[("container", short), ("netns", "")]),
        0.0
    );
    assert_eq!(value(&samples, "kernsight_pod_conntrack_entries", &[("container", short)]), 0.0);
    // The node namespace's own statistics are exported beside its fill.
    let node_stats = |event| [("netns", link.a.name.as_str()), ("event", event)];
    assert!(
        samples.iter().any(|s| s.name == "kernsight_conntrack_events_total"
            && s.labels.get("netns") == Some(&link.a.name)
            && s.labels.get("event").is_some_and(|e| e == "insert_failed")),
        "no conntrack statistics for {}",
        link.a.name
    );
    assert_eq!(value(&samples, "kernsight_conntrack_events_total", &node_stats("early_drop")), 0.0);
    // Each was masqueraded behind the node's uplink address: the NAT's ports toward the server.
    let snat = [
        ("netns", link.a.name.as_str()),
        ("source", &NODE_UPLINK.to_string()),
        ("destination", &SERVER.to_string()),
        ("port", &PORT.to_string()),
        ("protocol", "tcp"),
    ];
    assert_eq!(value(&samples, "kernsight_conntrack_snat_entries", &snat), kernel as f64);

    // The pod's own table, filled past the node's nf_conntrack_max (the bound of every
    // namespace's table) with UDP flows on its loopback that are never answered: each new one
    // past the bound evicts an unanswered entry (early_drop), or is dropped.
    link.b.nft(TRACK);
    let max: u64 =
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").unwrap().trim().parse().unwrap();
    assert!(max <= 1 << 22, "nf_conntrack_max is {max}: too many flows to overflow it in a test");
    let flows = max + 2000;
    let sent = pod.run(|| udp_flows(flows));
    assert_eq!(sent, flows, "every flow's first datagram was sent");
    let stats = kernel_stats(&link.b.proc_net("stat/nf_conntrack"));
    let refused = stats["early_drop"] + stats["drop"];
    assert!(refused >= 1, "the kernel evicted or dropped nothing: {stats:?}");
    let entries = count_of(&link.b);
    eprintln!("pod table: {entries} entries of {max}; kernel stats {stats:?}");

    let of = |event| [("container", short), ("event", event)];
    let samples = agent.scrape_until(Duration::from_secs(25), |s| {
        let evicted = value(s, "kernsight_pod_conntrack_events_total", &of("early_drop"))
            + value(s, "kernsight_pod_conntrack_events_total", &of("drop"));
        if evicted == refused as f64 {
            Ok(())
        } else {
            let pods: Vec<String> = s
                .iter()
                .filter(|s| s.name.starts_with("kernsight_pod_conntrack"))
                .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
                .collect();
            Err(format!("{evicted} evictions and drops, kernel {refused}; series: {pods:#?}"))
        }
    });
    let seen = value(&samples, "kernsight_pod_conntrack_entries", &[("container", short)]);
    // Entries only leave the table by eviction (UDP's unanswered timeout is 30 s): the count
    // the agent read is the kernel's, within the evictions since.
    assert!(seen as u64 <= max && seen as u64 + 2000 >= entries, "agent {seen}, kernel {entries} of {max}");
    let log = agent.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Sends one datagram per flow from the calling thread's namespace to its loopback: `flows`
/// distinct (source port, destination port) pairs, none answered. Returns how many went.
fn udp_flows(flows: u64) -> u64 {
    let mut sent = 0;
    let sockets: Vec<i32> = (0..flows.div_ceil(60_000))
        // SAFETY: a plain socket call.
        .map(|_| unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
        .collect();
    for fd in &sockets {
        for port in 1024..61_024u32 {
            if sent == flows {
                break;
            }
            let to = crate::net_support::sockaddr(std::net::Ipv4Addr::LOCALHOST, port as u16);
            // SAFETY: sendto from a buffer of the length given to an address of its size.
            let n = unsafe {
                libc::sendto(
                    *fd,
                    [0u8; 1].as_ptr().cast(),
                    1,
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            // Unconnected sockets are not told of the ICMP port unreachable that answers.
            if n == 1 {
                sent += 1;
            }
        }
        // SAFETY: closes a socket this function opened.
        unsafe { libc::close(*fd) };
    }
    sent
}
