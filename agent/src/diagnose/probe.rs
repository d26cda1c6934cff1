//! What `diagnose` sends, from inside the workload's network namespace (a thread that entered
//! it): a DNS query to its nameservers, and a TCP connect to the destination. Nothing else.

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{dns::message, kernel::netns};

/// How a name resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    /// The nameserver that answered, or the last one tried.
    pub server: IpAddr,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`...; `None`: no answer within the timeout.
    pub rcode: Option<&'static str>,
    pub milliseconds: f64,
    pub addresses: Vec<IpAddr>,
    /// Why no answer came (a send error, a timeout, a malformed answer).
    pub error: Option<String>,
}

/// How the connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Connected,
    /// A reset answered the SYN (ECONNREFUSED).
    Refused,
    /// No answer within the timeout: the SYN and its retransmissions went unanswered.
    TimedOut,
    /// An ICMP error or a local refusal: host or network unreachable, no route.
    Unreachable,
    /// Another error (`error` says which).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connect {
    pub destination: SocketAddr,
    pub outcome: Outcome,
    pub milliseconds: f64,
    pub error: Option<String>,
}

/// Connects to `destination` from the namespace at `netns`, then closes.
pub fn connect(
    netns: &Path,
    destination: SocketAddr,
    timeout: Duration,
) -> Result<Connect, netns::NetnsError> {
    netns::run_in(netns, || {
        let started = Instant::now();
        let result = TcpStream::connect_timeout(&destination, timeout);
        let milliseconds = started.elapsed().as_secs_f64() * 1e3;
        let (outcome, error) = match result {
            Ok(_) => (Outcome::Connected, None),
            Err(err) => (outcome_of(&err), Some(err.to_string())),
        };
        Connect { destination, outcome, milliseconds, error }
    })
}

fn outcome_of(err: &io::Error) -> Outcome {
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::ETIMEDOUT) => Outcome::TimedOut,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM | libc::EACCES) => Outcome::Unreachable,
        _ if err.kind() == io::ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Failed,
    }
}

/// Resolves `name` (A, then AAAA when A has no address) through `servers` in turn, from the
/// namespace at `netns`, each attempt waiting at most `timeout`.
pub fn resolve(
    netns: &Path,
    name: &str,
    servers: &[IpAddr],
    timeout: Duration,
) -> Result<Resolution, netns::NetnsError> {
    netns::run_in(netns, || {
        let mut last = None;
        for &server in servers {
            let a = ask(server, name, 1, timeout);
            let answered = a.rcode.is_some();
            let result = if a.rcode == Some("NOERROR") && a.addresses.is_empty() {
                let aaaa = ask(server, name, 28, timeout);
                Resolution { milliseconds: a.milliseconds + aaaa.milliseconds, ..aaaa }
            } else {
                a
            };
            if answered {
                return result;
            }
            last = Some(result);
        }
        last.unwrap_or_else(|| Resolution {
            server: IpAddr::from([0, 0, 0, 0]),
            rcode: None,
            milliseconds: 0.0,
            addresses: Vec::new(),
            error: Some("no nameserver: give --nameserver".into()),
        })
    })
}

/// One query and its answer (answers with another id, a stray or late one, are skipped).
fn ask(server: IpAddr, name: &str, qtype: u16, timeout: Duration) -> Resolution {
    let started = Instant::now();
    let outcome = |rcode, addresses, error: Option<String>| Resolution {
        server,
        rcode,
        milliseconds: started.elapsed().as_secs_f64() * 1e3,
        addresses,
        error,
    };
    let id = (std::process::id() as u16) ^ (started.elapsed().subsec_nanos() as u16) ^ qtype;
    let Some(query) = message::query(id, name, qtype) else {
        return outcome(None, Vec::new(), Some(format!("{name:?} is not a name DNS can carry")));
    };
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let exchange = || -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind(bind)?;
        socket.connect((server, 53))?;
        socket.send(&query)?;
        let mut buffer = [0u8; 4096];
        loop {
            let left = timeout.checked_sub(started.elapsed()).filter(|d| !d.is_zero());
            socket.set_read_timeout(Some(left.ok_or(io::ErrorKind::TimedOut)?))?;
            let n = socket.recv(&mut buffer)?;
            if buffer[..n].get(..2) == Some(&id.to_be_bytes()[..]) {
                return Ok(buffer[..n].to_vec());
            }
        }
    };
    match exchange() {
        Ok(answer) => match (message::parse(&answer), message::answer_addresses(&answer)) {
            (Ok(header), Ok(addresses)) => outcome(Some(message::rcode_name(header.rcode)), addresses, None),
            (Err(why), _) | (_, Err(why)) => {
                outcome(None, Vec::new(), Some(format!("malformed answer: {why}")))
            }
        },
        Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            outcome(None, Vec::new(), Some(format!("no answer within {} ms", timeout.as_millis())))
        }
        Err(err) => outcome(None, Vec::new(), Some(err.to_string())),
    }
}

/// The nameservers of a resolv.conf (`nameserver ADDRESS` lines), at most three as libc reads.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()?.parse().ok()).flatten()
        })
        .take(3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_of_resolv_conf() {
        let text = "# kubelet\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\n\
                    nameserver bogus\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:5\n";
        let servers = nameservers(text);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[0], "10.96.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(servers[1], "fd00::a".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn errors_name_their_outcome() {
        assert_eq!(outcome_of(&io::Error::from_raw_os_error(libc::ECONNREFUSED)), Outcome::Refused);
        assert_eq!(outcome_of(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)), Outcome::Unreachable);
        assert_eq!(outcome_of(&io::Error::from(io::ErrorKind::TimedOut)), Outcome::TimedOut);
        assert_eq!(outcome_of(&io::Error::from_raw_os_error(libc::EMFILE)), Outcome::Failed);
    }
}
