//! TCP health end to end, in network namespaces the tests create: connections that succeed,
//! fail on a closed port (a reset), and retransmit on a path that drops a share of segments.

use crate::net_support;
use crate::support;

use std::time::Duration;

use crate::net_support::{
    B_ADDR, Link, Netns, NsFile, have, snmp_tcp, tcp_connect, tcp_drain, tcp_listen, tcp_write,
};
use crate::support::{Agent, TestCgroup, parse, privileged, value};

const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

#[test]
fn connections_succeed_fail_and_reset_per_cgroup() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let netns = Netns::create();
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("tcp-conn");
    const PORT: u16 = 5001;
    const CLOSED: u16 = 5002;
    let inside = NsFile::of(&netns);
    let code = cgroup.run(|| {
        if !inside.enter() {
            return 2;
        }
        let listener = tcp_listen(LOOPBACK, PORT);
        let client = tcp_connect(LOOPBACK, PORT);
        if listener < 0 || client < 0 {
            return 3;
        }
        let server = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        if server < 0 {
            return 4;
        }
        // The client closes first, then the server: both reach CLOSE.
        unsafe { libc::close(client) };
        if tcp_drain(server) != 0 {
            return 5;
        }
        unsafe { libc::close(server) };
        if tcp_connect(LOOPBACK, CLOSED) != -libc::ECONNREFUSED {
            return 6;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2: netns, 3: listen/connect, 4: accept, 5: close, 6: refusal)");

    let of = |result| [("cgroup", cgroup.label.as_str()), ("result", result)];
    let lifetimes = |s: &[support::Sample]| {
        value(s, "kernsight_tcp_connection_duration_seconds_count", &[("cgroup", cgroup.label.as_str())])
    };
    // Three sockets reach CLOSE: the client, the accepted socket (after the client's FIN and its
    // own), and the refused attempt.
    let samples = agent.scrape_until(Duration::from_secs(5), |s| {
        let closed = lifetimes(s);
        if closed >= 3.0 { Ok(()) } else { Err(format!("{closed} connections reached CLOSE")) }
    });
    let connected = value(&samples, "kernsight_tcp_connections_total", &of("connected"));
    let accepted = value(&samples, "kernsight_tcp_connections_total", &of("accepted"));
    let failed = value(&samples, "kernsight_tcp_connections_total", &of("failed"));
    let received = value(
        &samples,
        "kernsight_tcp_resets_total",
        &[("cgroup", cgroup.label.as_str()), ("direction", "received")],
    );
    let sent_without_socket =
        value(&samples, "kernsight_tcp_resets_total", &[("cgroup", "no_socket"), ("direction", "sent")]);
    eprintln!(
        "connected {connected}, accepted {accepted}, failed {failed}, resets received {received}, \
         sent without socket {sent_without_socket}, lifetimes {}",
        lifetimes(&samples)
    );
    assert_eq!(connected, 1.0, "one connect succeeded");
    assert_eq!(accepted, 1.0, "one connection accepted, for the listener's cgroup");
    assert_eq!(failed, 1.0, "one connect refused");
    assert_eq!(received, 1.0, "the refused connect received one reset");
    assert!(sent_without_socket >= 1.0, "the closed port's reset was sent without a socket");
    assert_eq!(lifetimes(&samples), 3.0, "three connections reached CLOSE");
}

#[test]
fn a_lossy_path_shows_retransmits() {
    if !privileged() {
        return;
    }
    if !have("nft") {
        panic!("nft is missing: `cargo xtask setup` installs Debian's nftables");
    }
    let _serial = support::serial();
    let link = Link::create();
    const PORT: u16 = 5003;
    // b drops one in five segments sent to the port: the client's data, SYN and ACKs.
    link.b.nft(&format!(
        "table inet kslossy {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {PORT} numgen random mod 5 == 0 drop\n }}\n}}\n"
    ));
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("tcp-lossy");
    const BYTES: usize = 512 * 1024;
    let (a, b) = (NsFile::of(&link.a), NsFile::of(&link.b));
    let code = cgroup.run(|| {
        if !b.enter() {
            return 2;
        }
        let listener = tcp_listen(B_ADDR, PORT);
        if listener < 0 || !a.enter() {
            return 3;
        }
        // The server reads in a child (same cgroup) while the client writes.
        let reader = unsafe { libc::fork() };
        if reader == 0 {
            let server = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
            let read = if server < 0 { 0 } else { tcp_drain(server) };
            unsafe { libc::_exit(if read == BYTES { 0 } else { 1 }) };
        }
        let client = tcp_connect(B_ADDR, PORT);
        let written = if client < 0 { 0 } else { tcp_write(client, BYTES) };
        unsafe { libc::shutdown(client, libc::SHUT_WR) };
        let mut status = 0;
        unsafe { libc::waitpid(reader, &mut status, 0) };
        unsafe { libc::close(client) };
        if written != BYTES {
            return 4;
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return 5;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2-3: namespaces, 4: write, 5: read)");

    let samples = parse(&agent.scrape());
    let retransmits =
        value(&samples, "kernsight_tcp_retransmits_total", &[("cgroup", cgroup.label.as_str())]);
    // The kernel's own counts: retransmitted segments in each namespace, and a's tail loss
    // probes (sent without the tracepoint, counted in RetransSegs when they resend data).
    let segments =
        |ns: &net_support::Netns| snmp_tcp(&ns.proc_net("snmp"), "RetransSegs").expect("RetransSegs");
    let (client, server) = (segments(&link.a), segments(&link.b));
    let probes =
        net_support::netstat_field(&link.a.proc_net("netstat"), "TcpExt:", "TCPLossProbes").unwrap_or(0);
    eprintln!(
        "retransmitted segments: kernsight {retransmits}; kernel: client {client}, server {server} \
         (SYN-ACKs), client loss probes {probes}"
    );
    assert!(client > 0, "dropping 20% of the segments made the client retransmit");
    // Every retransmission of both sockets, in segments; the server's SYN-ACKs and the
    // client's loss probes are the kernel's only retransmissions without the tracepoint.
    let retransmits = retransmits as u64;
    assert!(
        retransmits <= client + server,
        "{retransmits} counted, the kernel retransmitted {}",
        client + server
    );
    assert!(
        retransmits >= client.saturating_sub(probes),
        "{retransmits} counted, the client retransmitted {client} segments of which at most {probes} were loss probes"
    );
}

#[test]
fn a_connect_that_times_out_is_a_failure_after_its_syn_retransmissions() {
    if !privileged() {
        return;
    }
    if !have("nft") {
        panic!("nft is missing: `cargo xtask setup` installs Debian's nftables");
    }
    let _serial = support::serial();
    let link = Link::create();
    const PORT: u16 = 5004;
    // b silently drops every segment to the port: SYNs go unanswered.
    link.b.nft(&format!(
        "table inet ksblackhole {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {PORT} drop\n }}\n}}\n"
    ));
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("tcp-timeout");
    let a = NsFile::of(&link.a);
    let code = cgroup.run(|| {
        if !a.enter() {
            return 2;
        }
        // TCP_SYNCNT 1: ETIMEDOUT after about 3 s instead of the default 2 minutes.
        if net_support::tcp_connect_with_syn_retries(B_ADDR, PORT, 1) != -libc::ETIMEDOUT {
            return 3;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2: netns, 3: the connect did not time out)");
    let samples = parse(&agent.scrape());
    let of_cgroup = [("cgroup", cgroup.label.as_str())];
    let failed = value(&samples, "kernsight_tcp_connections_total", &[of_cgroup[0], ("result", "failed")]);
    let retransmits = value(&samples, "kernsight_tcp_retransmits_total", &of_cgroup);
    let resets = value(&samples, "kernsight_tcp_resets_total", &of_cgroup) + 0.0;
    let lasted = value(&samples, "kernsight_tcp_connection_duration_seconds_sum", &of_cgroup);
    // The namespace's only TCP activity: the kernel's count is that connect's.
    let kernel = snmp_tcp(&link.a.proc_net("snmp"), "RetransSegs").expect("RetransSegs");
    eprintln!(
        "timed out: failed {failed}, retransmits {retransmits} (kernel {kernel}), resets {resets}, lasted {lasted:.2} s"
    );
    assert_eq!(failed, 1.0, "the timed-out connect is a failure");
    assert!(kernel >= 1, "the SYN was retransmitted");
    assert_eq!(retransmits, kernel as f64, "every SYN retransmission, as the kernel counts them");
    assert_eq!(resets, 0.0, "no reset: the SYNs went unanswered");
    assert!((2.5..10.0).contains(&lasted), "from the first SYN to the timeout: {lasted} s");
}
