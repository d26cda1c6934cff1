//! A recorded Kubernetes API on loopback: a hand-written HTTP/1.1 responder that answers each
//! request from a script of real API server responses (lists, watch streams of newline-delimited
//! events, Status errors) and records every request target, so that tests can check what the
//! agent's client asked for. One connection per request (`Connection: close`).

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::Receiver,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One part of a watch stream.
pub enum Line {
    /// One event, sent as one chunk ending in a newline.
    Event(serde_json::Value),
    /// Send nothing until the test says so (or 20 s pass).
    Gate(Receiver<()>),
}

/// How a watch stream ends.
pub enum End {
    /// The connection drops in the middle of the chunked body (a broken watch).
    Break,
    /// Held open until the server stops (a quiet watch).
    Hold,
}

pub enum Answer {
    /// A complete JSON response with this status.
    Json(u16, serde_json::Value),
    /// A watch: a 200 with a chunked body of events.
    Stream(Vec<Line>, End),
}

/// Which answer queue a request takes from.
fn route(target: &str) -> String {
    let path = target.split('?').next().unwrap_or(target);
    if target.contains("watch=true") { format!("watch {path}") } else { format!("get {path}") }
}

pub struct ApiServer {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Script = Arc<Mutex<Vec<(String, VecDeque<Answer>)>>>;

impl ApiServer {
    /// Serves `script`: for each route (`"get /api/v1/pods"`, `"watch /api/v1/pods"`, `"get
    /// /apis/apps/v1/namespaces/shop/replicasets/web-1"`), its answers in order. A request with no
    /// answer left gets a 404 Status.
    pub fn start(script: Vec<(&str, Vec<Answer>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let script: Script =
            Arc::new(Mutex::new(script.into_iter().map(|(r, a)| (r.to_owned(), a.into())).collect()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (script, log, halt) = (script.clone(), log.clone(), halt.clone());
                        handlers.push(std::thread::spawn(move || serve(stream, &script, &log, &halt)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for handler in handlers {
                let _ = handler.join();
            }
        });
        Self { address, requests, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Request targets (path and query, percent-decoded) in the order they arrived.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) until a request target satisfies `wanted`.
    pub fn wait_for(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.requests().iter().any(|r| wanted(r)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `%3D` → `=` and the like, so that tests compare readable targets.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(stream: TcpStream, script: &Script, log: &Mutex<Vec<String>>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The head ends with an empty line; GET requests have no body.
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let target = percent_decode(request_line.split_whitespace().nth(1).unwrap_or_default());
    log.lock().unwrap().push(target.clone());
    let key = route(&target);
    let answer = {
        let mut script = script.lock().unwrap();
        script.iter_mut().find(|(route, _)| *route == key).and_then(|(_, answers)| answers.pop_front())
    };
    let mut stream = stream;
    match answer {
        None => respond(&mut stream, 404, &status(404, "NotFound", &format!("no answer recorded for {key}"))),
        Some(Answer::Json(code, body)) => respond(&mut stream, code, &body),
        Some(Answer::Stream(lines, end)) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                        Connection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for line in lines {
                match line {
                    Line::Event(event) => {
                        let text = format!("{event}\n");
                        let chunk = format!("{:x}\r\n{text}\r\n", text.len());
                        if stream.write_all(chunk.as_bytes()).and_then(|()| stream.flush()).is_err() {
                            return;
                        }
                    }
                    Line::Gate(gate) => {
                        let _ = gate.recv_timeout(Duration::from_secs(20));
                    }
                }
            }
            match end {
                End::Break => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                End::Hold => {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

fn respond(stream: &mut TcpStream, code: u16, body: &serde_json::Value) {
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if code == 200 { "OK" } else { "Error" },
        text.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(text.as_bytes()));
}

/// A `Status` object as the API server sends with an error.
pub fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}
