//! `cargo xtask bench conntrack`: what conntrack per pod costs on a node whose table is full. A
//! network namespace of the benchmark's own, with conntrack on, gets `nf_conntrack_max` UDP
//! flows on its loopback (none answered: they stay 30 s); a release agent reads it as a node
//! namespace (`network.namespaces`). Rows: how long a reading (the ctnetlink dump) takes, from
//! the agent's `kernsight_conntrack_reading_seconds`, and how long scrapes take meanwhile (they
//! must not wait for it). The namespace and everything in it goes at the end of each round.

use std::{
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    bench::{agent_command, stop},
    process::output,
    report::Row,
    scrape_bench::{get, start_agent},
};

const ROUNDS: usize = 3;
/// Scrapes per round, one every `SCRAPE_EVERY`, from the agent's start: the first reading runs
/// during them.
const SCRAPES: usize = 20;
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// A named network namespace, deleted (with its table) on drop.
struct Namespace(String);

impl Namespace {
    fn create() -> Result<Self, String> {
        let name = format!("ksbench{}", std::process::id());
        let ip =
            |args: &[&str]| output(Command::new("ip").args(args)).ok_or(format!("ip {}", args.join(" ")));
        ip(&["netns", "add", &name])?;
        let namespace = Self(name);
        ip(&["-n", &namespace.0, "link", "set", "lo", "up"])?;
        // A rule with a `ct` expression turns conntrack on in the namespace.
        let rules = "table inet kernsight_bench {\n  chain out { type filter hook output priority 0; ct state new counter; }\n}\n";
        let path = std::env::temp_dir().join(format!("{}.nft", namespace.0));
        std::fs::write(&path, rules).map_err(|e| e.to_string())?;
        let loaded = output(Command::new("ip").args(["netns", "exec", &namespace.0, "nft", "-f"]).arg(&path));
        let _ = std::fs::remove_file(&path);
        loaded.ok_or("nft could not load the benchmark's rule (is nftables installed?)")?;
        Ok(namespace)
    }

    fn entries(&self) -> u64 {
        output(Command::new("ip").args([
            "netns",
            "exec",
            &self.0,
            "cat",
            "/proc/sys/net/netfilter/nf_conntrack_count",
        ]))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn run() -> Result<Vec<Row>, String> {
    let max: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .map_err(|e| format!("no conntrack on this kernel (nf_conntrack_max: {e})"))?
        .trim()
        .parse()
        .map_err(|e| format!("nf_conntrack_max: {e}"))?;
    println!(
        "conntrack per pod with a full node table: {max} UDP flows in a namespace of the benchmark's, {ROUNDS} rounds\n"
    );
    let (mut readings, mut scrapes, mut worst) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (reading, times) = measure(max)?;
        let slowest = times.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "round {round}/{ROUNDS}: reading {:.3} s; scrapes meanwhile median {:.1} ms, slowest {slowest:.1} ms",
            reading,
            crate::report::median(&times)
        );
        readings.push(reading);
        scrapes.push(crate::report::median(&times));
        worst.push(slowest);
    }
    Ok(vec![
        Row::new(format!("conntrack: reading with a full table ({max} entries)"), "s", readings),
        Row::new("conntrack: scrape during the reading, median", "ms", scrapes),
        Row::new("conntrack: scrape during the reading, slowest", "ms", worst),
    ])
}

/// One round: (the first reading's seconds, scrape times in ms).
fn measure(max: u64) -> Result<(f64, Vec<f64>), String> {
    let namespace = Namespace::create()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
    let sent = output(
        Command::new("ip")
            .args(["netns", "exec", &namespace.0])
            .arg(exe)
            .args(["__udp-flows", &max.to_string()]),
    )
    .ok_or("the UDP flows could not be sent")?;
    let entries = namespace.entries();
    if entries < max * 99 / 100 {
        return Err(format!("{} flows sent, {entries} entries in the table: not full", sent.trim()));
    }
    let config = std::env::temp_dir().join(format!("{}.toml", namespace.0));
    std::fs::write(&config, format!("[network]\nnamespaces = [\"{}\"]\n", namespace.0))
        .map_err(|e| e.to_string())?;
    let mut command = agent_command();
    command.arg("--config").arg(&config);
    let (mut agent, address) = start_agent(command)?;
    let result = (|| {
        let mut times = Vec::new();
        for _ in 0..SCRAPES {
            let started = Instant::now();
            get(&address, "/metrics")?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(SCRAPE_EVERY);
        }
        // The first reading started with the agent; wait for it to be published.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = get(&address, "/metrics")?;
            let seconds = gauge(&body, "kernsight_conntrack_reading_seconds").unwrap_or(0.0);
            let seen = gauge(&body, &format!("kernsight_conntrack_entries{{netns=\"{}\"}}", namespace.0));
            if seconds > 0.0 && seen.is_some() {
                return Ok((seconds, times));
            }
            if Instant::now() > deadline {
                return Err("the agent published no conntrack reading within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })();
    stop(&mut agent);
    let _ = std::fs::remove_file(&config);
    result
}

/// The value of the sample named `series` (name and labels as exposed) in a scrape.
fn gauge(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// `__udp-flows N`: one datagram to each of N (source port, destination port) pairs on the
/// loopback, none answered; prints how many went.
pub fn udp_flows(args: &[String]) -> Result<(), String> {
    let flows: u64 = args.first().and_then(|n| n.parse().ok()).ok_or("usage: __udp-flows N")?;
    let mut sent = 0;
    while sent < flows {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        for port in 1024..61_024u16 {
            if sent == flows {
                break;
            }
            if socket.send_to(b"x", ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{sent}");
    Ok(())
}
