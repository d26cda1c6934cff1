//! `cargo xtask bench http [CONNECTIONS]`: the metrics port under hostile clients. A release
//! agent gets CONNECTIONS connections at once (default 600): half send a few KiB of a request
//! head and stop, a quarter send 400 KiB of unfinished headers, a quarter pipeline requests and
//! never read the answers. Measured: how long until the agent has closed them all, its RSS
//! growth, how long normal scrapes take meanwhile; then what 150 concurrent scrapes cost in
//! encodes. Loopback only; every loop ends by itself.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent_bench::rss_mib,
    bench::{agent_command, median, stop},
    report::Row,
    scrape_bench::{get, start_agent},
};

/// How long the agent gets to close every attacking connection.
const DEADLINE: Duration = Duration::from_secs(15);
const CONCURRENT_SCRAPES: usize = 150;

pub fn run(connections: usize) -> Result<Vec<Row>, String> {
    let (mut agent, address) = start_agent(agent_command())?;
    let result = measure(&address, agent.id(), connections);
    stop(&mut agent);
    result
}

fn measure(address: &str, pid: u32, connections: usize) -> Result<Vec<Row>, String> {
    for _ in 0..3 {
        get(address, "/metrics")?;
    }
    let rss_before = rss_mib(pid);
    let started = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..connections {
        let Ok(mut stream) = TcpStream::connect(address) else { continue };
        let _ = match i % 4 {
            0 | 1 => write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: {}", "a".repeat(4000)),
            2 => write!(stream, "GET /metrics HTTP/1.1\r\nX-Big: {}", "b".repeat(400 * 1024)),
            // Pipelined requests whose answers are never read: the agent's writes stall.
            _ => stream.write_all("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50).as_bytes()),
        };
        attackers.push(stream);
    }
    let connected = started.elapsed();
    let mut scrape_ms = Vec::new();
    let mut peak_rss = rss_before;
    let closed_after = loop {
        let scrape_started = Instant::now();
        let body = get(address, "/metrics")?;
        scrape_ms.push(scrape_started.elapsed().as_secs_f64() * 1e3);
        peak_rss = peak_rss.max(rss_mib(pid));
        if sample(&body, "kernsight_http_connections_open") <= 1.0
            && started.elapsed() > Duration::from_secs(1)
        {
            break Some(started.elapsed());
        }
        if started.elapsed() > DEADLINE {
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    drop(attackers);
    let body = get(address, "/metrics")?;
    let count = |name: &str, label: &str| sample(&body, &format!("{name}{{{label}}}"));
    let slowest = scrape_ms.iter().copied().fold(0.0, f64::max);
    let growth = peak_rss - rss_before;
    println!(
        "{connections} hostile connections (opened in {connected:.1?}): all closed after {}; \
         {} scrapes meanwhile, median {:.1} ms, slowest {slowest:.1} ms; RSS {rss_before:.1} MiB, peak +{growth:.1} MiB",
        closed_after.map_or("MORE THAN 15 s".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        scrape_ms.len(),
        median(&scrape_ms),
    );
    println!(
        "closed by: header timeout {}, idle {}, write timeout {}, 431 {}, evicted {}, refused at the limit {}",
        count("kernsight_http_connections_timed_out_total", "phase=\"header\""),
        count("kernsight_http_connections_timed_out_total", "phase=\"idle\""),
        count("kernsight_http_connections_timed_out_total", "phase=\"write\""),
        count("kernsight_http_connections_refused_total", "reason=\"header_too_large\""),
        count("kernsight_http_connections_refused_total", "reason=\"evicted\""),
        count("kernsight_http_connections_refused_total", "reason=\"limit\""),
    );
    let encodes = concurrent_scrapes(address)?;
    println!("{CONCURRENT_SCRAPES} concurrent scrapes: {encodes} encodes");
    let closed = closed_after.ok_or("the agent did not close every hostile connection within 15 s")?;
    Ok(vec![
        Row::new(
            format!("hostile connections ({connections}) all closed after"),
            "s",
            vec![closed.as_secs_f64()],
        ),
        Row::new("scrape time during the attack", "ms", scrape_ms),
        Row::new("agent RSS growth during the attack", "MiB", vec![growth]),
        Row::new(format!("encodes for {CONCURRENT_SCRAPES} concurrent scrapes"), "encodes", vec![encodes]),
    ])
}

/// Encodes caused by CONCURRENT_SCRAPES scrapes sent at once.
fn concurrent_scrapes(address: &str) -> Result<f64, String> {
    let before = sample(&get(address, "/metrics")?, "kernsight_metrics_encodes_total");
    let barrier = Arc::new(Barrier::new(CONCURRENT_SCRAPES));
    let scrapers: Vec<_> = (0..CONCURRENT_SCRAPES)
        .map(|_| {
            let (barrier, address) = (barrier.clone(), address.to_owned());
            thread::spawn(move || -> Result<(), String> {
                let mut stream = TcpStream::connect(&address).map_err(|e| e.to_string())?;
                stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
                barrier.wait();
                write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .collect();
    for scraper in scrapers {
        scraper.join().map_err(|_| "a scraper panicked")??;
    }
    let after = sample(&get(address, "/metrics")?, "kernsight_metrics_encodes_total");
    // `after` includes the encode of the `before` scrape, not its own.
    Ok(after - before - 1.0)
}

/// The value of the first sample line that starts with `series` and a space.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
