//! Shared pieces of the integration tests: a running agent, cgroups the test owns, workloads
//! forked into them, and a parser for the scraped metrics.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

pub mod containerd;
pub mod image;
pub mod memory;
pub mod podman;

pub const BINARY: &str = env!("CARGO_BIN_EXE_kernsight");

/// Agents count every cgroup on the machine, so tests that start one run one at a time: the
/// cgroups of a test running beside it would take slots and skew bounds it checks.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether privileged tests can run. Under `cargo xtask test` as root they must
/// (`KERNSIGHT_PRIVILEGED_TESTS=required`): a missing privilege fails the test instead.
pub fn privileged(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("KERNSIGHT_PRIVILEGED_TESTS").as_deref() != Ok("required"),
            "{test} needs root, and KERNSIGHT_PRIVILEGED_TESTS=required"
        );
        eprintln!("SKIPPED {test}: needs root (loads eBPF programs, creates cgroups)");
    }
    root
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
pub fn unified_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            (after.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .next()
        .expect("no cgroup2 hierarchy is mounted")
}

/// A cgroup v2 child that the test creates and removes.
pub struct TestCgroup {
    pub path: PathBuf,
    /// The path as kernsight labels it (relative to the hierarchy's root).
    pub label: String,
}

/// Mount point of the v1 hierarchy of `controller`, if the host has one.
pub fn v1_root(controller: &str) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split(' ');
        let is_v1 = after.next()? == "cgroup";
        let options = after.nth(1)?;
        let mount_point = before.split(' ').nth(4)?;
        (is_v1 && options.split(',').any(|o| o == controller)).then(|| PathBuf::from(mount_point))
    })
}

impl TestCgroup {
    /// A child of the unified (v2) hierarchy's root.
    pub fn create(tag: &str) -> Self {
        Self::create_in(&unified_root(), tag)
    }

    /// A child of the root of the hierarchy mounted at `root`.
    pub fn create_in(root: &Path, tag: &str) -> Self {
        let name = format!("kernsight-test-{}-{tag}", std::process::id());
        let path = root.join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path, label: format!("/{name}") }
    }

    /// Runs `workload` in a child in this cgroup (see `spawn_in`) and returns its exit code.
    pub fn run(&self, workload: impl FnOnce() -> i32) -> i32 {
        let status = wait_status(spawn_in(&self.path, workload));
        assert!(libc::WIFEXITED(status), "workload did not exit normally");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, JOIN_FAILED, "the workload could not join {}", self.path.display());
        code
    }
}

/// The exit code of a child that could not join its cgroup.
pub const JOIN_FAILED: i32 = 101;

/// Forks a child that moves itself into the cgroup directory `dir`, runs `workload` and exits
/// with its return value (`JOIN_FAILED` if it could not join); returns its pid without waiting.
/// The child only makes raw syscalls: safe after fork in a threaded process.
pub fn spawn_in(dir: &Path, workload: impl FnOnce() -> i32) -> i32 {
    let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(JOIN_FAILED);
            }
            libc::close(fd);
            libc::_exit(workload());
        }
        pid
    }
}

/// Waits for a child of this process; its raw wait status.
pub fn wait_status(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The workloads have exited; the cgroup may take a moment to become empty.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.path.display());
    }
}

/// Raw syscalls for workloads (no libc wrappers that could cache or substitute calls).
pub fn getppid_times(n: usize) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

pub fn getpid_times(n: usize) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
}

/// `openat` of a path that does not exist, `n` times: each fails with ENOENT.
pub fn failing_openat_times(n: usize) {
    let path = c"/nonexistent-kernsight-test/file";
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
    }
}

/// A running `kernsight run`, stopped (SIGTERM) when dropped.
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

impl Agent {
    /// Starts `kernsight run ARGS`, with maps pinned in a directory of its own unless ARGS name one.
    pub fn start(args: &[&str]) -> Self {
        let own_pins = (!args.contains(&"--pin-dir")).then(|| unique_pin_dir("agent"));
        let mut command = Command::new(BINARY);
        command.args(["run", "--listen", "127.0.0.1:0"]).args(args);
        if let Some(dir) = &own_pins {
            command.arg("--pin-dir").arg(dir);
        }
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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                    let address = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(address);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                panic!("kernsight did not start ({status:?}); log:\n{}", log.lock().unwrap());
            }
        };
        Self { child, address, log, own_pins }
    }

    /// SIGKILL: no clean-up of any kind, as after a crash or an OOM kill of the agent.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// SIGTERM, then wait for the exit (20 s at most).
    pub fn stop(mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "kernsight did not stop on SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        if let Some(dir) = &self.own_pins {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn http_get(address: SocketAddr, path: &str, accept: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to kernsight");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// One sample of the text format: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Sample { name: name.to_owned(), labels, value: value.parse().expect("sample value") }
        })
        .collect()
}

/// Sum of the samples of `name` whose labels include all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// A config file in a temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernsight.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
