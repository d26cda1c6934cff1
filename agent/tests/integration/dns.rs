//! DNS per workload end to end: a DNS server the test runs in a network namespace it made
//! answers NOERROR, NXDOMAIN or nothing, by the name asked; a process in a test cgroup asks it
//! over UDP (IPv4 and IPv6) and TCP; the counts per rcode and qtype, the timeouts and the
//! latency histogram must be exact for that cgroup.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    net_support::{NsFile, loopback_up},
    support::{self, Agent, TestCgroup, config_file, eventually, parse, path_str, privileged, value},
    trace::{Tracer, json_lines},
};

const A: u16 = 1;
const AAAA: u16 = 28;
const TXT: u16 = 16;

/// A query for `name` (one label) of type `qtype`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut bytes = [id.to_be_bytes(), 0x0100u16.to_be_bytes(), [0, 1], [0, 0], [0, 0], [0, 0]].concat();
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    bytes
}

/// The answer the test's server gives to `query`: NXDOMAIN for names starting with `nx`, none
/// for `drop`, NOERROR otherwise.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let name = query.get(13..13 + usize::from(*query.get(12)?))?;
    if name.starts_with(b"drop") {
        return None;
    }
    let rcode = if name.starts_with(b"nx") { 3 } else { 0 };
    let mut reply = query.to_vec();
    reply[2] = 0x81;
    reply[3] = 0x80 | rcode;
    Some(reply)
}

/// The server: UDP on 127.0.0.1:53 and [::1]:53, TCP on 127.0.0.1:53, in a network namespace
/// of its own (made by its thread with `unshare`, so no `ip` tool is needed), until dropped.
/// Clients enter it through `netns()`. A silent server reads and answers nothing.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    netns: String,
}

impl Server {
    fn start(answering: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain syscalls; the new namespace is this thread's alone.
            let (unshared, tid) = unsafe { (libc::unshare(libc::CLONE_NEWNET) == 0, libc::gettid()) };
            assert!(unshared && loopback_up(), "cannot make the server's network namespace");
            let udp: Vec<UdpSocket> = [(Ipv4Addr::LOCALHOST.into(), 53), (Ipv6Addr::LOCALHOST.into(), 53)]
                .into_iter()
                .map(|address: (std::net::IpAddr, u16)| UdpSocket::bind(address).unwrap())
                .collect();
            let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 53)).unwrap();
            for socket in &udp {
                socket.set_nonblocking(true).unwrap();
            }
            tcp.set_nonblocking(true).unwrap();
            ready_tx.send(format!("/proc/{}/task/{tid}/ns/net", std::process::id())).unwrap();
            let mut buffer = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let mut idle = true;
                for socket in udp.iter().filter(|_| answering) {
                    while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                        idle = false;
                        if let Some(reply) = answer(&buffer[..n]) {
                            socket.send_to(&reply, from).unwrap();
                        }
                    }
                }
                if answering && let Ok((stream, _)) = tcp.accept() {
                    idle = false;
                    serve_tcp(stream);
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let netns = ready.recv().expect("the server thread failed to start");
        Self { stop, thread: Some(thread), netns }
    }

    fn netns(&self) -> NsFile {
        NsFile::at(&self.netns)
    }
}

/// Answers one length-prefixed message on a TCP connection.
fn serve_tcp(mut stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut length = [0u8; 2];
    let mut message = [0u8; 512];
    if stream.read_exact(&mut length).is_ok() {
        let n = usize::from(u16::from_be_bytes(length)).min(512);
        if stream.read_exact(&mut message[..n]).is_ok()
            && let Some(reply) = answer(&message[..n])
        {
            let framed = [(reply.len() as u16).to_be_bytes().to_vec(), reply].concat();
            let _ = stream.write_all(&framed);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `message` on a connected UDP socket; waits `wait` for an answer; whether one came.
fn udp_ask(socket: &UdpSocket, message: &[u8], wait: Duration) -> bool {
    let mut buffer = [0u8; 512];
    socket.set_read_timeout(Some(wait)).is_ok()
        && socket.send(message).is_ok_and(|n| n == message.len())
        && socket.recv(&mut buffer).is_ok()
}

#[test]
fn rcodes_timeouts_and_latency_are_exact_per_cgroup_over_udp_tcp_and_ipv6() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let server = Server::start(true);
    let (_dir, config) = config_file("[dns]\ntimeout_milliseconds = 1000\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let cgroup = TestCgroup::create("dns");
    // Built before the fork: the child makes syscalls only.
    let ok: Vec<Vec<u8>> = (0..10).map(|i| query(100 + i, &format!("ok{i}"), A)).collect();
    let nx: Vec<Vec<u8>> = (0..10).map(|i| query(200 + i, &format!("nx{i}"), AAAA)).collect();
    let dropped: Vec<Vec<u8>> = (0..5).map(|i| query(300 + i, &format!("drop{i}"), A)).collect();
    let over_tcp = query(400, "tcp", TXT);
    let framed = [(over_tcp.len() as u16).to_be_bytes().to_vec(), over_tcp.clone()].concat();
    let over_ipv6 = query(500, "six", AAAA);
    let ns = server.netns();
    let started = Instant::now();
    let code = cgroup.run(|| {
        if !ns.enter() {
            return 2;
        }
        let Ok(v4) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return 3 };
        let Ok(v6) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else { return 3 };
        if v4.connect((Ipv4Addr::LOCALHOST, 53)).is_err() || v6.connect((Ipv6Addr::LOCALHOST, 53)).is_err() {
            return 3;
        }
        let second = Duration::from_secs(1);
        if !ok.iter().chain(&nx).all(|q| udp_ask(&v4, q, second)) {
            return 4;
        }
        if dropped.iter().any(|q| udp_ask(&v4, q, Duration::from_millis(50))) {
            return 5;
        }
        if !udp_ask(&v6, &over_ipv6, second) {
            return 6;
        }
        let Ok(mut tcp) = TcpStream::connect((Ipv4Addr::LOCALHOST, 53)) else { return 7 };
        let mut reply = [0u8; 2];
        if tcp.set_read_timeout(Some(second)).is_err()
            || tcp.write_all(&framed).is_err()
            || tcp.read_exact(&mut reply).is_err()
        {
            return 8;
        }
        0
    });
    assert_eq!(
        code, 0,
        "the workload failed (2-3: namespace, sockets; 4: answers; 5: an answer to drop; 6: IPv6; 7-8: TCP)"
    );
    let workload_took = started.elapsed();
    let label = cgroup.label.clone();
    let of = |samples: &[support::Sample], name: &str, key: &str, value_: &str| {
        value(samples, name, &[("cgroup", &label), (key, value_)])
    };
    // The five unanswered queries time out a second after they were sent.
    let samples = eventually(Duration::from_secs(10), || {
        let samples = parse(&agent.scrape());
        let timeouts = of(&samples, "kernsight_dns_timeouts_total", "qtype", "A");
        if timeouts < 5.0 {
            return Err(format!("{timeouts} timeouts so far"));
        }
        Ok(samples)
    });
    assert_eq!(of(&samples, "kernsight_dns_queries_total", "qtype", "A"), 15.0, "10 answered, 5 dropped");
    assert_eq!(
        of(&samples, "kernsight_dns_queries_total", "qtype", "AAAA"),
        11.0,
        "10 NXDOMAIN, 1 over IPv6"
    );
    assert_eq!(of(&samples, "kernsight_dns_queries_total", "qtype", "TXT"), 1.0, "over TCP");
    assert_eq!(of(&samples, "kernsight_dns_responses_total", "rcode", "NOERROR"), 12.0, "10, IPv6, TCP");
    assert_eq!(of(&samples, "kernsight_dns_responses_total", "rcode", "NXDOMAIN"), 10.0);
    assert_eq!(of(&samples, "kernsight_dns_timeouts_total", "qtype", "A"), 5.0);
    assert_eq!(of(&samples, "kernsight_dns_timeouts_total", "qtype", "AAAA"), 0.0);
    let latency = |suffix: &str| {
        value(&samples, &format!("kernsight_dns_latency_seconds_{suffix}"), &[("cgroup", &label)])
    };
    assert_eq!(latency("count"), 22.0, "every answered query, timed");
    assert!(
        latency("sum") > 0.0 && latency("sum") < workload_took.as_secs_f64(),
        "{} s in all, within the {workload_took:?} the workload ran",
        latency("sum")
    );
    assert_eq!(value(&samples, "kernsight_dns_malformed_total", &[("cgroup", &label)]), 0.0);
}

/// The programs the log says `probe` attached, as one line.
fn logged_programs(log: &str, probe: &str) -> String {
    support::probe_log_list(log, probe, "programs").join(", ")
}

/// Both on (the default), `net_cgroup` and `dns` run in one cgroup_skb program per direction;
/// either alone runs its own. Whichever runs, the test cgroup's exchanges are counted exactly:
/// as DNS queries and answers, and as packets and bytes each way.
#[test]
fn traffic_and_dns_share_one_program_a_direction_and_each_alone_counts_the_same() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let server = Server::start(true);
    const N: u16 = 8;
    let queries: Vec<Vec<u8>> = (0..N).map(|i| query(600 + i, &format!("shared{i}"), A)).collect();
    // An IPv4 and UDP header on each.
    let query_bytes: usize = queries.iter().map(|q| 28 + q.len()).sum();
    const OFF: &str = "[network]\ninterface_counters = \"off\"\n";
    // (config, traffic counted, DNS counted, the family that attaches, the programs attached)
    let cases = [
        (OFF.to_owned(), true, true, "net_cgroup", "ks_net_dns_ingress, ks_net_dns_egress"),
        (
            format!("{OFF}[dns]\nenabled = false\n"),
            true,
            false,
            "net_cgroup",
            "ks_net_ingress, ks_net_egress",
        ),
        (format!("{OFF}cgroup_traffic = false\n"), false, true, "dns", "ks_dns_ingress, ks_dns_egress"),
    ];
    for (text, traffic, dns, probe, programs) in cases {
        let (_dir, config) = config_file(&text);
        let agent = Agent::start(&["--config", path_str(&config)]);
        let log = agent.log();
        assert_eq!(logged_programs(&log, probe), programs, "{text}\n{log}");
        if traffic && dns {
            assert_eq!(logged_programs(&log, "dns"), programs, "both name the shared programs: {log}");
        }
        let cgroup = TestCgroup::create("dns-shared");
        let ns = server.netns();
        let code = cgroup.run(|| {
            if !ns.enter() {
                return 2;
            }
            let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return 3 };
            if socket.connect((Ipv4Addr::LOCALHOST, 53)).is_err() {
                return 3;
            }
            if queries.iter().all(|q| udp_ask(&socket, q, Duration::from_secs(1))) { 0 } else { 4 }
        });
        assert_eq!(code, 0, "the workload failed (2-3: namespace, socket; 4: an answer)");
        let of = [("cgroup", cgroup.label.as_str())];
        let samples = eventually(Duration::from_secs(10), || {
            let samples = parse(&agent.scrape());
            let answered = value(&samples, "kernsight_dns_responses_total", &of);
            let received = value(&samples, "kernsight_container_network_receive_packets_total", &of);
            if (dns && answered < f64::from(N)) || (traffic && received < f64::from(N)) {
                return Err(format!("{answered} answers and {received} packets received so far"));
            }
            Ok(samples)
        });
        let expected = |on: bool, n: usize| if on { n as f64 } else { 0.0 };
        let sent = value(&samples, "kernsight_container_network_transmit_packets_total", &of);
        let sent_bytes = value(&samples, "kernsight_container_network_transmit_bytes_total", &of);
        assert_eq!(sent, expected(traffic, N.into()), "{text}: one datagram a query");
        assert_eq!(sent_bytes, expected(traffic, query_bytes), "{text}: IP packets' bytes");
        let received = value(&samples, "kernsight_container_network_receive_packets_total", &of);
        assert_eq!(received, expected(traffic, N.into()), "{text}: one datagram an answer");
        let asked =
            value(&samples, "kernsight_dns_queries_total", &[("cgroup", &cgroup.label), ("qtype", "A")]);
        assert_eq!(asked, expected(dns, N.into()), "{text}: DNS queries");
        assert_eq!(value(&samples, "kernsight_dns_responses_total", &of), expected(dns, N.into()));
        assert!(agent.stop().success(), "clean exit on SIGTERM");
    }
}

#[test]
fn garbage_floods_and_unanswered_queries_stay_bounded_and_counted() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // Nothing answers (and nothing reads: the datagrams queue until the socket's buffer is
    // full, then are dropped after the programs saw them leave).
    let server = Server::start(false);
    const MAX_PENDING: usize = 64;
    let (_dir, config) =
        config_file(&format!("[dns]\ntimeout_milliseconds = 60000\nmax_pending_queries = {MAX_PENDING}\n"));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let cgroup = TestCgroup::create("dns-flood");
    const GARBAGE: usize = 300;
    const QUERIES: usize = 1_000;
    // Garbage: random lengths and bytes, loops of compression pointers, empty datagrams.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut garbage: Vec<Vec<u8>> = (0..GARBAGE - 2)
        .map(|_| {
            let len = (next() % 200) as usize + 1;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect();
    garbage.push([[0u8; 4].as_slice(), &[0, 1, 0, 0, 0, 0, 0, 0], &[0xc0, 12, 0, 1]].concat());
    garbage.push([0u8; 11].to_vec());
    // Queries of random types that nothing answers (no server runs here).
    let queries: Vec<Vec<u8>> = (0..QUERIES).map(|i| query(i as u16, "q", next() as u16)).collect();
    let ns = server.netns();
    let code = cgroup.run(|| {
        if !ns.enter() {
            return 2;
        }
        // Not connected: nothing listens, and the port unreachable errors are not reported.
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return 3 };
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        let sent = garbage.iter().chain(&queries).filter(|m| socket.send_to(m, server).is_ok()).count();
        if sent == GARBAGE + QUERIES { 0 } else { 4 }
    });
    assert_eq!(code, 0, "the workload failed (2-3: namespace, socket; 4: a send)");
    let label = cgroup.label.clone();
    let samples = eventually(Duration::from_secs(10), || {
        let samples = parse(&agent.scrape());
        let queries: f64 = samples
            .iter()
            .filter(|s| s.name == "kernsight_dns_queries_total" && s.labels.get("cgroup") == Some(&label))
            .map(|s| s.value)
            .sum();
        let malformed = value(&samples, "kernsight_dns_malformed_total", &[("cgroup", &label)]);
        // A random datagram can be a well-formed query: whatever is not malformed is a query.
        if queries + malformed < (GARBAGE + QUERIES) as f64 {
            return Err(format!("{queries} queries and {malformed} malformed so far"));
        }
        Ok(samples)
    });
    let malformed = value(&samples, "kernsight_dns_malformed_total", &[("cgroup", &label)]);
    assert!(malformed >= (GARBAGE - 10) as f64, "{malformed} of {GARBAGE} garbage datagrams malformed");
    let qtypes: Vec<&String> = samples
        .iter()
        .filter(|s| s.name == "kernsight_dns_queries_total" && s.labels.get("cgroup") == Some(&label))
        .map(|s| &s.labels["qtype"])
        .collect();
    assert!(qtypes.len() <= 15, "qtype labels stay within the known set: {qtypes:?}");
    assert!(qtypes.iter().any(|q| *q == "other"), "random types are other");
    assert!(value(&samples, "kernsight_dns_pending_queries", &[]) <= MAX_PENDING as f64, "bounded");
    assert!(value(&samples, "kernsight_dns_untracked_queries_total", &[]) >= (QUERIES - MAX_PENDING) as f64);
    assert_eq!(value(&samples, "kernsight_ring_buffer_lost_events_total", &[("ring", "dns")]), 0.0);
    // Still answering: the scrape above came back, and /readyz says ready.
    assert!(agent.scrape().contains("kernsight_dns_queries_total"));
}

#[test]
fn trace_dns_shows_names_rcodes_and_latency_of_one_cgroup_only() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let server = Server::start(true);
    let (traced, other) = (TestCgroup::create("dns-traced"), TestCgroup::create("dns-other"));
    let tracer = Tracer::start(&["dns", "--cgroup", path_str(&traced.path), "-o", "json"]);
    let asked = [query(1, "db", A), query(2, "nxmissing", AAAA), query(3, "dropped", A)];
    let garbage = b"\x00\x01not dns".to_vec();
    let framed = {
        let message = query(4, "bytcp", TXT);
        [(message.len() as u16).to_be_bytes().to_vec(), message].concat()
    };
    let ns = server.netns();
    let workload = |with_tcp: bool| {
        if !ns.enter() {
            return 2;
        }
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return 3 };
        if socket.connect((Ipv4Addr::LOCALHOST, 53)).is_err() {
            return 3;
        }
        let answered = asked.iter().filter(|q| udp_ask(&socket, q, Duration::from_millis(300))).count();
        if answered != 2 || socket.send(&garbage).is_err() {
            return 4;
        }
        if with_tcp {
            let Ok(mut tcp) = TcpStream::connect((Ipv4Addr::LOCALHOST, 53)) else { return 5 };
            let mut reply = [0u8; 2];
            if tcp.set_read_timeout(Some(Duration::from_secs(1))).is_err()
                || tcp.write_all(&framed).is_err()
                || tcp.read_exact(&mut reply).is_err()
            {
                return 5;
            }
        }
        0
    };
    assert_eq!(other.run(|| workload(false)), 0, "the other cgroup's workload failed");
    assert_eq!(traced.run(|| workload(true)), 0, "the traced cgroup's workload failed");
    let (stdout, summary) = tracer.finish();
    let events = json_lines(&stdout);
    let seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default().to_owned();
            (text("kind"), text("name"), text("qtype"), text("rcode"))
        })
        .collect();
    let expected: Vec<(String, String, String, String)> = [
        ("query", "db.", "A", ""),
        ("answer", "db.", "A", "NOERROR"),
        ("query", "nxmissing.", "AAAA", ""),
        ("answer", "nxmissing.", "AAAA", "NXDOMAIN"),
        ("query", "dropped.", "A", ""),
        ("malformed", "", "", ""),
        ("query", "bytcp.", "TXT", ""),
        ("answer", "bytcp.", "TXT", "NOERROR"),
    ]
    .iter()
    .map(|(k, n, q, r)| ((*k).to_owned(), (*n).to_owned(), (*q).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(seen, expected, "only the traced cgroup's messages, in order; summary: {summary}");
    let answers: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "answer").collect();
    assert!(answers.iter().all(|e| e["latency_ns"].as_u64().is_some_and(|ns| ns > 0)), "{answers:#?}");
    assert!(events.iter().all(|e| e["server"] == "127.0.0.1:53"), "{events:#?}");
    assert!(summary.contains("lost 0 events"), "{summary}");
}
