//! Reading a kernsight agent's `/metrics` (for `kernsight top` and `kernsight advise`): a plain
//! HTTP GET and a parser of the Prometheus text format (the samples only; comments and types are
//! not needed).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(
        "no kernsight agent answers at {0} ({1}): start one with `kernsight run` or name it with --agent HOST:PORT"
    )]
    Connect(String, std::io::Error),
    #[error("reading {0}/metrics: {1}")]
    Read(String, std::io::Error),
    #[error("{0}/metrics answered {1}")]
    Status(String, String),
    #[error(
        "{0} answered with TLS: its metrics port needs TLS and authentication (--web.config.file), which top and advise do not speak yet; use the agent's loopback port in proxy mode"
    )]
    Tls(String),
    #[error(
        "{0}/metrics sent more than {1} MiB: not a kernsight agent, or one exporting far too many series (lower its bounds)"
    )]
    TooLarge(String, u64),
}

/// The largest reply read from an agent. A node's /metrics is a few MiB at its configured bounds;
/// a peer that sends more is not trusted to stop.
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// `GET /metrics` from `address` (`host:port`).
pub fn fetch(address: &str) -> Result<String, ScrapeError> {
    fetch_bounded(address, MAX_REPLY_BYTES)
}

/// `GET /metrics`, refusing a reply longer than `limit` bytes.
fn fetch_bounded(address: &str, limit: u64) -> Result<String, ScrapeError> {
    let timeout = Duration::from_secs(10);
    let connect = || -> std::io::Result<TcpStream> {
        let target = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such address"))?;
        TcpStream::connect_timeout(&target, timeout)
    };
    let mut stream = connect().map_err(|e| ScrapeError::Connect(address.to_owned(), e))?;
    let read = |stream: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n")?;
        let mut response = Vec::new();
        (&mut *stream).take(limit + 1).read_to_end(&mut response)?;
        Ok(response)
    };
    let response = read(&mut stream).map_err(|e| ScrapeError::Read(address.to_owned(), e))?;
    if response.len() as u64 > limit {
        return Err(ScrapeError::TooLarge(address.to_owned(), limit.div_ceil(1 << 20)));
    }
    // A TLS record (alert: 0x15, handshake: 0x16) of TLS 1.x, not an HTTP status line.
    if matches!(response.as_slice(), [0x15 | 0x16, 0x03, ..]) {
        return Err(ScrapeError::Tls(address.to_owned()));
    }
    let response = String::from_utf8(response).map_err(|_| {
        let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, "the reply is not UTF-8 text");
        ScrapeError::Read(address.to_owned(), invalid)
    })?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(ScrapeError::Status(address.to_owned(), status.to_owned()));
    }
    Ok(body.to_owned())
}

/// The samples of a text exposition; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = closing_brace(line, open)?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?),
        None => (series, ""),
    };
    Some(Sample { name: name.to_owned(), labels: parse_labels(labels)?, value })
}

/// The `}` that closes the label set opened at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `a="x",b="y \"q\""` → {a: x, b: y "q"}
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = after[end + 2..].trim_start_matches(',').trim();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_quoted_labels() {
        let text = "# HELP x y\n# TYPE x counter\nx_total{pod=\"a,b\",container=\"c\\\"d\"} 12\nup 1\n\
                    h_bucket{le=\"+Inf\"} 3\nbad line\nh_sum 0.5\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].labels.get("pod").map(String::as_str), Some("a,b"));
        assert_eq!(samples[0].labels.get("container").map(String::as_str), Some("c\"d"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1], Sample { name: "up".into(), labels: BTreeMap::new(), value: 1.0 });
        assert_eq!(samples[2].labels.get("le").map(String::as_str), Some("+Inf"));
        assert_eq!(samples[3].value, 0.5);
        assert!(parse("x{a=\"unterminated} 1\n").is_empty());
    }

    #[test]
    fn a_reply_past_the_bound_is_refused_not_buffered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
            // Endless, as a hostile peer would; the reader stops at its bound.
            let line = [b'x'; 4096];
            while stream.write_all(&line).is_ok() {}
        });
        match fetch_bounded(&address, 1 << 20) {
            Err(ScrapeError::TooLarge(_, mib)) => assert_eq!(mib, 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn a_tls_port_is_named_as_such() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The whole request head: closing with part of it unread would reset the connection
            // (seen on a loaded machine, where the head came in two reads), and a reset is no
            // TLS answer.
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            // What rustls answers to plain HTTP: a fatal alert record.
            let _ = stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]);
        });
        let fetched = fetch(&address);
        assert!(matches!(fetched, Err(ScrapeError::Tls(_))), "{fetched:?}");
        server.join().unwrap();
    }

    #[test]
    fn unescapes_label_values() {
        let text = "x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\",c=\"\"} 42\n";
        let samples = parse(text);
        assert_eq!(samples[0].labels["b"], "q\"u\\o\nte");
        assert_eq!(samples[0].labels["c"], "");
    }
}
