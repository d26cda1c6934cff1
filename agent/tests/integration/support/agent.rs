//! A running `kernsight run`, ready when its `/readyz` says so, stopped and its pins removed
//! when dropped.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use super::{BINARY, Sample, eventually, parse, poll};

/// How long an agent may take to load its programs and answer `/readyz` (BTF parsing and
/// program verification are slow on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    child: Child,
    pub address: SocketAddr,
    log: Arc<Mutex<String>>,
    /// A pin directory of this agent's own, removed when it is dropped.
    own_pins: Option<PathBuf>,
}

/// A pin directory no other agent uses (tests must not continue each other's counters, nor those
/// of an agent running on the host).
pub fn unique_pin_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PathBuf::from(format!("/sys/fs/bpf/kernsight-test-{tag}-{}-{n}", std::process::id()))
}

/// A pin directory a test named (with `unique_pin_dir`), removed when dropped, also when the
/// test fails.
pub struct PinDir(pub PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Agent {
    /// Starts `kernsight run ARGS` (maps pinned in a directory of its own unless ARGS name one)
    /// and waits until `/readyz` answers 200: every enabled probe family attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Agent::start`] with these environment variables set (`NODE_NAME`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let agent = Self::launch_with_env(args, env);
        let (status, body) = agent.readyz();
        if status != 200 {
            panic!("/readyz answered {status}: {body}log:\n{}", agent.log());
        }
        agent
    }

    /// Starts `kernsight run ARGS` without waiting for readiness: for an agent that is expected
    /// not to become ready (then [`Agent::wait_readyz`] with 503).
    pub fn launch(args: &[&str]) -> Self {
        Self::launch_with_env(args, &[])
    }

    fn launch_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let own_pins = (!args.contains(&"--pin-dir")).then(|| unique_pin_dir("agent"));
        let mut command = Command::new(BINARY);
        command.args(["run", "--listen", "127.0.0.1:0"]).args(args);
        if let Some(dir) = &own_pins {
            command.arg("--pin-dir").arg(dir);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kernsight");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        // The port (`--listen 127.0.0.1:0`) is chosen by the agent: its log is the one place that
        // says which. Readiness is `/readyz`'s to say, not the log's.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                    let address = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(address);
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = rx.recv_timeout(START_TIMEOUT).ok().and_then(|a| a.parse().ok());
        let agent = |address| Self { child, address, log, own_pins };
        match address {
            Some(address) => agent(address),
            None => {
                // Dropping it stops it and removes its pins.
                let mut failed = agent(SocketAddr::from(([127, 0, 0, 1], 0)));
                let status = failed.child.try_wait().ok().flatten();
                let _ = failed.child.kill();
                let _ = failed.child.wait();
                // The log reader may still hold the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!("kernsight did not start ({status:?}); log:\n{}", failed.log());
            }
        }
    }

    /// Waits until `/readyz` answers (the agent's exit fails the test at once) and checks that it
    /// says `status`; the body. The agent decides readiness once, when its families are attached
    /// or have failed, before it serves: the first answer is the answer.
    pub fn wait_readyz(&self, status: u16) -> String {
        let (got, body) = self.readyz();
        assert_eq!(got, status, "/readyz answered {got}: {body}log:\n{}", self.log());
        body
    }

    /// The first answer of `/readyz` (status, body), once it answers.
    fn readyz(&self) -> (u16, String) {
        eventually(START_TIMEOUT, || match request(self.address, "/readyz", "*/*") {
            Ok(answer) => Ok(answer),
            Err(_) if !self.alive() => {
                panic!("kernsight exited before /readyz answered; log:\n{}", self.log())
            }
            Err(e) => Err(format!("/readyz: {e}")),
        })
    }

    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that our child exists (a zombie counts as gone below).
        let exists = unsafe { libc::kill(self.child.id() as i32, 0) } == 0;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        exists && !stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
    }

    /// SIGKILL: no clean-up of any kind, as after a crash or an OOM kill of the agent.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pin directory of this agent's own (removed when it is dropped), unless ARGS named one.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.own_pins.as_deref()
    }

    /// GET a path; returns the status code and the body.
    pub fn get(&self, path: &str, accept: &str) -> (u16, String) {
        http_get(self.address, path, accept)
    }

    /// The metrics in the Prometheus text format.
    pub fn scrape(&self) -> String {
        let (status, body) = self.get("/metrics", "text/plain");
        assert_eq!(status, 200, "scrape failed: {body}");
        body
    }

    /// Scrapes until `check` accepts the samples (`timeout` at most) and returns them; on timeout
    /// fails with `check`'s last complaint and the agent's log.
    #[track_caller]
    pub fn scrape_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Sample]) -> Result<(), String>,
    ) -> Vec<Sample> {
        let found = poll(timeout, || {
            let samples = parse(&self.scrape());
            check(&samples).map(|()| samples)
        });
        found.unwrap_or_else(|last| panic!("{last}\nagent log:\n{}", self.log()))
    }

    /// SIGTERM, then wait for the exit (20 s at most).
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let exited = poll(Duration::from_secs(20), || {
            self.child.try_wait().expect("wait").ok_or_else(|| "kernsight still runs".to_owned())
        });
        exited.unwrap_or_else(|last| panic!("SIGTERM: {last}; log:\n{}", self.log()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let stopped = poll(Duration::from_secs(20), || match self.child.try_wait() {
                Ok(None) => Err("kernsight still runs".to_owned()),
                _ => Ok(()),
            });
            if stopped.is_err() {
                eprintln!("cleanup: kernsight ignored SIGTERM for 20 s: killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(dir) = &self.own_pins {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// GET `path` from `address`: the status code and the body.
pub fn http_get(address: SocketAddr, path: &str, accept: &str) -> (u16, String) {
    request(address, path, accept).unwrap_or_else(|e| panic!("GET http://{address}{path}: {e}"))
}

fn request(address: SocketAddr, path: &str, accept: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {accept}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The non-zero values of the pinned array of cgroup ids `map` under the pin directory `pins`
/// (`SLOT_OWNERS`: the owners of the syscall rows; `NET_TRAFFIC_TAGS`: of the traffic slots).
pub fn pinned_ids(pins: &std::path::Path, map: &str) -> Vec<u64> {
    let map = pins.join(format!("v{}/{map}", kernsight_common::MAP_LAYOUT_VERSION));
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&map)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {}",
        map.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    let owner = |value: &serde_json::Value| -> u64 {
        match value {
            serde_json::Value::Number(n) => n.as_u64().expect("an id"),
            bytes => u64::from_le_bytes(bpftool_bytes(bytes).try_into().expect("8 bytes")),
        }
    };
    dump.as_array()
        .expect("entries")
        .iter()
        .map(|entry| owner(&entry["value"]))
        .filter(|&id| id != 0)
        .collect()
}

/// The per-CPU values of index `index` of the pinned per-CPU array `map` under the pin directory
/// `pins`, each as its bytes.
pub fn pinned_per_cpu(pins: &std::path::Path, map: &str, index: u32) -> Vec<Vec<u8>> {
    let map = pins.join(format!("v{}/{map}", kernsight_common::MAP_LAYOUT_VERSION));
    let key = index.to_le_bytes().map(|b| b.to_string());
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(&map)
        .arg("key")
        .args(&key)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map lookup: {}", String::from_utf8_lossy(&out.stderr));
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    let values = entry["values"].as_array().expect("per-CPU values");
    values.iter().map(|cpu| bpftool_bytes(&cpu["value"])).collect()
}

/// The u64 at `offset` of each of `values`, added up.
pub fn sum_u64_at(values: &[Vec<u8>], offset: usize) -> u64 {
    values.iter().map(|bytes| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())).sum()
}

/// The bytes of a value `bpftool -j` prints without BTF: `["0x01", "0x00", ...]`.
pub fn bpftool_bytes(value: &serde_json::Value) -> Vec<u8> {
    let bytes = value.as_array().unwrap_or_else(|| panic!("bpftool's bytes: {value}"));
    bytes
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().expect("a hex byte").trim_start_matches("0x"), 16).unwrap())
        .collect()
}
