//! Reading the agent's `/metrics` (Prometheus text format): a plain HTTP/1.0 GET over TCP and a
//! parser for the sample lines, enough for kernsight's own output.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// GET `http://{address}/metrics`; the body.
pub fn fetch(address: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(10);
    let socket = address
        .to_socket_addrs()
        .map_err(|e| format!("not an address ({e})"))?
        .next()
        .ok_or_else(|| "not an address".to_owned())?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("/metrics answered {}", head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_owned())
}

/// The samples of a text-format body; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim_end().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample { name: series.to_owned(), labels: BTreeMap::new(), value });
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect::<String>();
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.is_empty() || key == "}" {
            break;
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        match chars.peek() {
            Some(',') => {
                chars.next();
            }
            _ => break,
        }
    }
    Some(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\",c=\"\"} 42\nup 1\nbad line\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].labels["a"], "1");
        assert_eq!(samples[0].labels["b"], "q\"u\\o\nte");
        assert_eq!(samples[0].labels["c"], "");
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1], Sample { name: "up".into(), labels: BTreeMap::new(), value: 1.0 });
    }
}
