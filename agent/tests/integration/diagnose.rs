//! `kernsight diagnose connectivity` on prepared cases, in network namespaces the test makes:
//! a "pod" namespace (its process in a cgroup named like a container's) joined by a veth pair
//! to a "destination" namespace that listens on one port, leaves another closed, drops a third
//! with an nftables rule, and answers DNS for one name.

use std::{
    net::{Ipv4Addr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::net_support::{A_ADDR, B_ADDR, Link, NsFile, have, tcp_listen};
use crate::support::{self, Agent, TestCgroup, privileged, spawn_in, unified_root};

const OPEN: u16 = 5501;
const CLOSED: u16 = 5502;
const FIREWALLED: u16 = 5503;

/// DNS on A_ADDR:53 in the destination namespace: `svc.test` has the address A_ADDR, every
/// other name is NXDOMAIN. Stops when dropped.
struct Resolver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Resolver {
    fn start(netns: NsFile) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            assert!(netns.enter(), "enter the destination namespace");
            let socket = UdpSocket::bind((A_ADDR, 53)).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buffer = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                    socket.send_to(&answer(&buffer[..n]), from).unwrap();
                }
            }
        });
        ready.recv().expect("the resolver thread failed to start");
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(|t| t.join());
    }
}

/// The answer to a query: an A record (a pointer to the question's name) for `svc.test`.
fn answer(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] = 0x81;
    let known =
        query.get(12..22) == Some(b"\x03svc\x04test\x00".as_slice()) && query.get(22..24) == Some(&[0, 1]);
    if known {
        reply[3] = 0x80;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        reply.extend_from_slice(&A_ADDR.octets());
    } else {
        reply[3] = 0x83;
    }
    reply
}

/// `kernsight diagnose connectivity TARGET DESTINATION ...`: (exit code, JSON report).
fn diagnose(target: &str, destination: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(support::BINARY)
        .args(["diagnose", "connectivity", target, destination, "-o", "json", "--timeout", "2s"])
        .args(extra)
        .output()
        .expect("run kernsight diagnose");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{destination}: not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout))
    });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn diagnose_names_the_cause_of_each_prepared_case() {
    if !privileged() {
        return;
    }
    assert!(have("nft"), "nft is missing: `cargo xtask setup` installs Debian's nftables");
    let _serial = support::serial();
    let link = Link::create();
    link.a.nft(&format!(
        "table inet kernsight_fw {{\n  chain input {{ type filter hook input priority 0; tcp dport {FIREWALLED} drop; }}\n}}\n"
    ));
    let agent = Agent::start(&[]);
    let address = agent.address.to_string();
    let listener = NsFile::of(&link.a).run(|| tcp_listen(A_ADDR, OPEN));
    assert!(listener >= 0);
    let _dns = Resolver::start(NsFile::of(&link.a));

    let id = "d1".repeat(32);
    let parent = TestCgroup::create_in(&unified_root(), "diagnose");
    let container = parent.child(&format!("docker-{id}.scope"));
    let pod = NsFile::of(&link.b);
    let pid = spawn_in(&container.path, || {
        if !pod.enter() {
            return 2;
        }
        // SAFETY: a raw syscall: wait for the signal that ends the test.
        unsafe { libc::pause() };
        0
    });
    let target = &id[..12];
    let agent_flag = ["--agent", address.as_str()];
    // The process may not have entered the namespace yet: its address shows when it has.
    support::eventually(Duration::from_secs(5), || {
        let trie = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).unwrap_or_default();
        if trie.contains(&B_ADDR.to_string()) {
            Ok(())
        } else {
            Err(format!("{pid} is not in the pod namespace yet"))
        }
    });

    let (code, reachable) = diagnose(target, &format!("{A_ADDR}:{OPEN}"), &agent_flag);
    assert_eq!((code, reachable["verdict"]["cause"].as_str()), (0, Some("reachable")), "{reachable:#}");
    assert_eq!(reachable["route"]["interface"], link.b_if.as_str(), "{reachable:#}");
    assert_eq!(reachable["connect"]["outcome"], "connected");

    let (code, closed) = diagnose(target, &format!("{A_ADDR}:{CLOSED}"), &agent_flag);
    assert_eq!((code, closed["verdict"]["cause"].as_str()), (1, Some("port_closed")), "{closed:#}");
    assert_eq!(closed["connect"]["outcome"], "refused");
    assert!(closed["evidence"]["tcp"]["AttemptFails"].as_u64() >= Some(1), "{closed:#}");

    let (code, dropped) = diagnose(target, &format!("{A_ADDR}:{FIREWALLED}"), &agent_flag);
    assert_eq!((code, dropped["verdict"]["cause"].as_str()), (1, Some("firewall_drop")), "{dropped:#}");
    assert_eq!(dropped["connect"]["outcome"], "timed_out");
    let netfilter = dropped["evidence"]["drops"]
        .as_array()
        .and_then(|d| d.iter().find(|r| r[0] == "NETFILTER_DROP"))
        .and_then(|r| r[1].as_u64());
    // The SYN and its retransmission after 1 s, at least.
    assert!(netfilter >= Some(2), "{dropped:#}");
    assert!(dropped["evidence"]["tcp"]["RetransSegs"].as_u64() >= Some(1), "{dropped:#}");

    // Names, through the test's resolver.
    let ns = ["--agent", address.as_str(), "--nameserver", "10.99.0.1"];
    let (code, named) = diagnose(target, &format!("svc.test:{OPEN}"), &ns);
    assert_eq!((code, named["verdict"]["cause"].as_str()), (0, Some("reachable")), "{named:#}");
    assert_eq!(named["resolution"]["rcode"], "NOERROR");
    assert_eq!(named["resolution"]["addresses"][0], A_ADDR.to_string());
    let (code, unknown) = diagnose(target, &format!("nosuch.test:{OPEN}"), &ns);
    assert_eq!((code, unknown["verdict"]["cause"].as_str()), (1, Some("dns_error")), "{unknown:#}");
    assert!(unknown["connect"].is_null(), "no connect after a failed resolution: {unknown:#}");

    // No route from the pod: nothing is sent.
    let away = Ipv4Addr::new(192, 0, 2, 1);
    let (code, unrouted) = diagnose(target, &format!("{away}:80"), &agent_flag);
    assert_eq!((code, unrouted["verdict"]["cause"].as_str()), (1, Some("no_route")), "{unrouted:#}");
    assert!(unrouted["connect"].is_null());

    // Mistakes are one-line errors, exit status 2.
    let out = Command::new(support::BINARY)
        .args(["diagnose", "connectivity", "nosuchcontainer", "x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no running container matches `nosuchcontainer`"), "{stderr}");
}
