//! `kernsight trace` on the real kernel: events the test causes, decoded and counted exactly,
//! and counts equal to what strace and bpftrace report for the same process.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::support::{self, BINARY, ChildGuard, TestCgroup, eventually, path_str, privileged, serial};

/// A running `kernsight trace`, started once its programs are attached.
pub(crate) struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Tracer {
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BINARY)
            .arg("trace")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kernsight trace");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let mut tracer = Self { child, stderr: rx, stdout: Some(stdout) };
        tracer.wait_for_stderr("tracing ", Duration::from_secs(60));
        tracer
    }

    fn wait_for_stderr(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("kernsight trace did not print `{prefix}...`; stderr: {seen:#?}");
    }

    /// Ctrl-C, then everything it printed on stdout and its summary line. It must stop on
    /// SIGINT within 20 s.
    pub(crate) fn finish(mut self) -> (String, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = eventually(Duration::from_secs(20), || {
            let status = self.child.try_wait().expect("wait for kernsight trace");
            status.ok_or_else(|| "kernsight trace still runs after SIGINT".to_owned())
        });
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        // The summary is the last line on stderr (interval lines may come before it).
        let summary = std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(10)).ok())
            .filter(|line| line.contains(" events, "))
            .last()
            .unwrap_or_default();
        assert!(status.success(), "kernsight trace failed: {status}; {summary}");
        (stdout, summary)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shell that waits for a line on stdin, then runs `script`.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Script {
    fn start(script: &str) -> Self {
        let mut child = Command::new("/bin/sh")
            .args(["-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sh");
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the script run; returns its stdout once it exited.
    fn go(mut self) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n").expect("write to sh");
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).expect("read sh");
        }
        assert!(self.child.wait().expect("wait sh").success(), "script failed");
        out
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn fork_tracepoint_decodes_parent_and_child_pids() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let script = Script::start("/bin/true & echo $!; wait");
    let parent = script.pid().to_string();
    let tracer = Tracer::start(&["tracepoint:sched:sched_process_fork", "--pid", &parent, "-o", "json"]);
    let child: u64 = script.go().trim().parse().expect("the child's pid");
    let (stdout, summary) = tracer.finish();
    let events = json_lines(&stdout);
    assert_eq!(events.len(), 1, "one fork by the script: {stdout}");
    let fork = &events[0];
    assert_eq!(fork["parent_pid"], serde_json::json!(script_pid(&parent)), "{fork}");
    assert_eq!(fork["child_pid"], serde_json::json!(child), "{fork}");
    assert_eq!(fork["parent_comm"], "sh", "__data_loc string: {fork}");
    assert_eq!(fork["child_comm"], "sh", "__data_loc string: {fork}");
    assert_eq!(fork["pid"], serde_json::json!(script_pid(&parent)));
    assert!(summary.contains("lost 0 events"), "{summary}");
}

fn script_pid(pid: &str) -> u64 {
    pid.parse().expect("pid")
}

#[test]
fn exec_tracepoint_decodes_a_data_loc_filename() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("kernsight-known-name-Zq7");
    std::fs::copy("/bin/true", &program).expect("copy /bin/true");
    let script = Script::start(&format!("exec {}", path_str(&program)));
    let pid = script.pid().to_string();
    let tracer = Tracer::start(&["tracepoint:sched:sched_process_exec", "--pid", &pid, "-o", "json"]);
    script.go();
    let (stdout, _) = tracer.finish();
    let events = json_lines(&stdout);
    assert_eq!(events.len(), 1, "{stdout}");
    assert_eq!(events[0]["filename"], path_str(&program), "{}", events[0]);
    assert_eq!(events[0]["old_pid"], serde_json::json!(script_pid(&pid)));
}

#[test]
fn exec_in_a_cgroup_prints_exactly_the_commands_in_order() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-exec");
    let procs = cgroup.path.join("cgroup.procs");
    // The shell joins the cgroup first, then waits: only the commands below exec in it.
    let script = Script::start(
        "/bin/echo one >/dev/null; /bin/true 'two words' three; /bin/ls -d / >/dev/null; /usr/bin/env true",
    );
    std::fs::write(&procs, script.pid().to_string()).expect("move the shell into the cgroup");
    let tracer = Tracer::start(&["exec", "--cgroup", path_str(&cgroup.path), "-o", "json"]);
    let table = Tracer::start(&["exec", "--cgroup", &cgroup.label]);
    script.go();
    let (stdout, summary) = tracer.finish();
    let seen: Vec<(String, String)> = json_lines(&stdout)
        .iter()
        .map(|e| {
            (e["filename"].as_str().unwrap_or("").to_owned(), e["argv"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    // `env` looks `true` up along PATH: failed execs are not events, the one that succeeds is,
    // under the path it found.
    let found = seen.last().map(|(f, _)| f.clone()).unwrap_or_default();
    assert!(found.ends_with("/true"), "{seen:#?}");
    let expected: Vec<(String, String)> = [
        ("/bin/echo", "/bin/echo one"),
        ("/bin/true", "/bin/true \"two words\" three"),
        ("/bin/ls", "/bin/ls -d /"),
        ("/usr/bin/env", "/usr/bin/env true"),
        (found.as_str(), "true"),
    ]
    .iter()
    .map(|(f, a)| ((*f).to_owned(), (*a).to_owned()))
    .collect();
    assert_eq!(seen, expected, "summary: {summary}");
    assert!(summary.contains("lost 0 events"), "{summary}");
    // The table: a header, then one aligned line per exec, arguments last.
    let (text, _) = table.finish();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].ends_with("FILENAME                 ARGV"), "{text}");
    assert_eq!(lines.len(), 1 + expected.len(), "{text}");
    let argv_column = lines[0].find("ARGV").unwrap_or(0);
    let filename_column = lines[0].find("FILENAME").unwrap_or(0);
    for (line, (filename, argv)) in lines[1..].iter().zip(&expected) {
        assert_eq!(line.get(argv_column..), Some(argv.as_str()), "ARGV column of {line:?}\n{text}");
        assert!(line.get(filename_column..).is_some_and(|f| f.starts_with(filename.as_str())), "{text}");
    }
}

/// The process the syscall counts are taken of: this test binary, re-run as a workload that
/// waits for a line on stdin, makes the calls, and leaves with `_exit` (no harness output).
const WORKLOAD_ENV: &str = "KERNSIGHT_TRACE_WORKLOAD";
const GETPPID: usize = 1000;
const OPENAT: usize = 300;
const WRITE: usize = 200;

#[test]
#[ignore = "run by syscall_counts_are_exact_and_match_strace_and_bpftrace"]
fn syscall_workload() {
    if std::env::var_os(WORKLOAD_ENV).is_none() {
        return;
    }
    // SAFETY: raw syscalls on valid arguments; _exit ends the process without cleanup calls.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        let mut go = [0u8; 1];
        libc::read(0, go.as_mut_ptr().cast(), 1);
        support::getppid_times(GETPPID);
        support::failing_openat_times(OPENAT);
        for _ in 0..WRITE {
            libc::syscall(libc::SYS_write, null, b"x".as_ptr(), 1);
        }
        libc::_exit(0);
    }
}

fn strace_counts(path: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(path).expect("strace output");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let name = (*cells.last()?).to_owned();
            let calls = cells.get(3)?.parse().ok()?;
            let errors = if cells.len() == 6 { cells[4].parse().ok()? } else { 0 };
            Some((name, calls, errors))
        })
        .collect()
}

#[test]
fn syscall_counts_are_exact_and_match_strace_and_bpftrace() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    // This test binary, re-run as the workload: libtest names the test by its module path
    // without the crate's name.
    let me = std::env::current_exe().expect("test binary");
    let workload_test =
        format!("{}::syscall_workload", module_path!().split_once("::").map_or("", |(_, m)| m));
    let mut workload = ChildGuard(
        Command::new(me)
            .args(["--exact", &workload_test, "--ignored", "--nocapture", "--test-threads=1"])
            .env(WORKLOAD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the workload"),
    );
    let pid = workload.id().to_string();
    // Until the test's thread blocks in its read() of stdin (`/proc/PID/task/TID/syscall` starts
    // with the syscall's number): the tracers then attach before any of the counted calls.
    let reading = format!("{} ", libc::SYS_read);
    eventually(Duration::from_secs(10), || {
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("syscall")).ok())
            .collect();
        if threads.iter().any(|syscall| syscall.starts_with(&reading)) {
            Ok(())
        } else {
            Err(format!("no thread of the workload blocks in read(): {threads:?}"))
        }
    });
    let kernel = Tracer::start(&["syscall", "--pid", &pid, "--count-by", "syscall"]);
    let histograms = Tracer::start(&[
        "syscall",
        "getppid",
        "openat",
        "write",
        "--pid",
        &pid,
        "--hist",
        "latency_ns",
        "--count-by",
        "syscall",
    ]);
    let events = Tracer::start(&[
        "syscall",
        "getppid",
        "openat",
        "write",
        "--pid",
        &pid,
        "--count-by",
        "syscall,errno",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let strace_out = dir.path().join("strace.txt");
    let mut strace = ChildGuard(
        Command::new("strace")
            .args(["-c", "-f", "-o", path_str(&strace_out), "-p", &pid])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strace"),
    );
    let mut strace_err = BufReader::new(strace.stderr.take().expect("strace stderr"));
    let mut line = String::new();
    while strace_err.read_line(&mut line).expect("strace stderr") > 0 && !line.contains("attached") {
        line.clear();
    }
    let program = format!(
        "BEGIN {{ printf(\"ready\\n\"); }} tracepoint:raw_syscalls:sys_exit /pid == {pid}/ {{ @[args->id] = count(); }}"
    );
    let mut bpftrace = ChildGuard(
        Command::new("bpftrace")
            .args(["-e", &program])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bpftrace"),
    );
    let mut bpftrace_out = BufReader::new(bpftrace.stdout.take().expect("bpftrace stdout"));
    let mut line = String::new();
    while bpftrace_out.read_line(&mut line).expect("bpftrace stdout") > 0 && !line.contains("ready") {
        line.clear();
    }

    workload.stdin.take().expect("stdin").write_all(b"g").expect("go");
    assert!(workload.wait().expect("workload").success());
    assert!(strace.wait().expect("strace").success());
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        bpftrace_out.read_to_string(&mut text).map(|_| text)
    });
    interrupt_until_it_exits(&mut bpftrace);
    let text = output.join().expect("bpftrace reader").expect("bpftrace output");
    let (kernel_counts, kernel_summary) = kernel.finish();
    let (event_counts, event_summary) = events.finish();
    let (drawn, _) = histograms.finish();

    let count_of = |table: &str, key: &str| -> Option<u64> {
        table.lines().find_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let (count, keys) = cells.split_last()?;
            (keys.join(" ") == key).then(|| count.parse().ok())?
        })
    };
    let bpftrace_of = |nr: i64| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(&format!("@[{nr}]: ")).and_then(|n| n.trim().parse().ok()))
    };
    let strace = strace_counts(&strace_out);
    let strace_of = |name: &str| strace.iter().find(|(n, _, _)| n == name).map(|(_, c, e)| (*c, *e));
    let table = [
        ("getppid", libc::SYS_getppid, GETPPID, 0),
        ("openat", libc::SYS_openat, OPENAT, OPENAT),
        ("write", libc::SYS_write, WRITE, 0),
    ];
    for (name, nr, calls, errors) in table {
        let calls = calls as u64;
        assert_eq!(count_of(&kernel_counts, name), Some(calls), "kernel count of {name}:\n{kernel_counts}");
        assert_eq!(bpftrace_of(nr), Some(calls), "bpftrace count of {name}:\n{text}");
        assert_eq!(strace_of(name), Some((calls, errors as u64)), "strace count of {name}: {strace:?}");
    }
    assert_eq!(count_of(&event_counts, "getppid -"), Some(GETPPID as u64), "{event_counts}");
    assert_eq!(count_of(&event_counts, "openat ENOENT"), Some(OPENAT as u64), "{event_counts}");
    assert_eq!(count_of(&event_counts, "write -"), Some(WRITE as u64), "{event_counts}");
    assert!(kernel_summary.contains("lost 0 events") && event_summary.contains("lost 0 events"));
    // Latency histograms made in the kernel: every call in one bucket of its syscall's.
    for (name, calls) in [("getppid", GETPPID), ("openat", OPENAT), ("write", WRITE)] {
        let in_buckets = in_histogram(&drawn, &format!("@latency_ns[{name}]:"));
        assert_eq!(in_buckets, calls as u64, "{name}:\n{drawn}");
    }
}

/// Sends SIGINT to bpftrace until it exits (30 s at most). bpftrace 0.17 (Debian 12) acts on a
/// SIGINT only when the signal interrupts its `epoll_wait`: one that lands while it works
/// between two waits is noted and then ignored, and it polls on (seen on a loaded machine, where
/// the workload ended while bpftrace was still starting up).
fn interrupt_until_it_exits(bpftrace: &mut ChildGuard) {
    eventually(Duration::from_secs(30), || {
        if bpftrace.try_wait().expect("wait for bpftrace").is_some() {
            return Ok(());
        }
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
        Err("bpftrace still runs after SIGINT".to_owned())
    });
}

/// The sum of the bucket counts of the histogram titled `title` in a drawn `--hist` table.
fn in_histogram(drawn: &str, title: &str) -> u64 {
    drawn
        .lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| l.starts_with('['))
        .filter_map(|l| l.split('|').next()?.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn mistakes_are_one_line_errors_with_close_names() {
    if !privileged() {
        return; // tracefs, where tracepoint names are looked up, is root's
    }
    for (args, expected) in [
        (&["tracepoint:sched:sched_proces_fork"][..], "did you mean sched:sched_process_fork"),
        (&["sycall"][..], "did you mean syscall?"),
        (&["syscall", "getppidd"][..], "unknown syscall `getppidd` (did you mean getppid"),
        (&["syscall", "--where", "ret <"][..], "at column 6"),
        (&["syscall", "--where", "rett < 0"][..], "unknown field `rett` (did you mean ret"),
        (&["exec", "--count-by", "comn"][..], "unknown field `comn` (did you mean comm"),
        (&["exec", "--duration", "3 weeks"][..], "unknown unit"),
    ] {
        let out = Command::new(BINARY).arg("trace").args(args).output().expect("run kernsight");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Without privileges: one line that says what is missing and how to fix it.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BINARY, "trace", "tcp"])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing privileges") && stderr.contains("run kernsight as root"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn presets_name_what_the_test_caused() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let me = std::process::id().to_string();
    // Two presets need what older kernels lack: drop reasons (5.17) and the
    // capability:cap_capable tracepoint (6.18). There they must be refused, naming what is
    // missing, and the other presets still trace.
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    let has_drop_reason = std::fs::read_to_string(events.join("skb/kfree_skb/format"))
        .is_ok_and(|format| format.contains(" reason;"));
    let has_cap_tracepoint = events.join("capability/cap_capable").exists();
    let drop_args = ["drop", "--pid", &me, "-o", "json", "--where", "reason == \"NO_SOCKET\""];
    let cap_args = ["cap", "--pid", &me, "-o", "json", "--where", "capability == \"CAP_CHOWN\""];
    let tcp = Tracer::start(&["tcp", "--pid", &me, "-o", "json"]);
    let drop = if has_drop_reason { Some(Tracer::start(&drop_args)) } else { refused(&drop_args, "reason") };
    let signal = Tracer::start(&["signal", "--pid", &me, "-o", "json"]);
    let cap =
        if has_cap_tracepoint { Some(Tracer::start(&cap_args)) } else { refused(&cap_args, "cap_capable") };

    // A SYN to a loopback port nobody listens on: SYN_SENT, then CLOSE on the RST, and the SYN
    // is dropped for want of a socket.
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "nothing listens on {port}");
    // SIGTERM to a child of ours.
    let mut sleeper = ChildGuard(Command::new("sleep").arg("30").spawn().expect("sleep"));
    let comm = format!("/proc/{}/comm", sleeper.id());
    eventually(Duration::from_secs(10), || {
        // Until it has exec'd.
        let name = std::fs::read_to_string(&comm).unwrap_or_default();
        if name.trim() == "sleep" { Ok(()) } else { Err(format!("the child is `{}`", name.trim())) }
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sleeper.id() as i32, libc::SIGTERM) };
    let _ = sleeper.wait();
    // chown to another user: a CAP_CHOWN check.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("owned");
    std::fs::write(&file, b"").expect("create");
    std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");

    let tcp = json_lines(&tcp.finish().0);
    let states: Vec<(String, String, String)> = tcp
        .iter()
        .filter(|e| e["dst"] == format!("127.0.0.1:{port}"))
        .map(|e| (e["oldstate"].to_string(), e["newstate"].to_string(), e["protocol"].to_string()))
        .collect();
    let expected = [("\"TCP_CLOSE\"", "\"TCP_SYN_SENT\""), ("\"TCP_SYN_SENT\"", "\"TCP_CLOSE\"")]
        .map(|(a, b)| (a.to_owned(), b.to_owned(), "\"IPPROTO_TCP\"".to_owned()));
    assert_eq!(states, expected, "{tcp:#?}");

    if let Some(drop) = drop {
        let drops = json_lines(&drop.finish().0);
        assert_eq!(drops.len(), 1, "one SYN dropped for want of a socket: {drops:#?}");
        assert_eq!(drops[0]["protocol"], 0x0800, "IPv4: {}", drops[0]);
    }

    let signals = json_lines(&signal.finish().0);
    let to_sleeper: Vec<&serde_json::Value> =
        signals.iter().filter(|e| e["args.pid"] == serde_json::json!(sleeper.id())).collect();
    assert_eq!(to_sleeper.len(), 1, "{signals:#?}");
    assert_eq!(to_sleeper[0]["signal"], "SIGTERM");
    assert_eq!(to_sleeper[0]["args.comm"], "sleep");

    if let Some(cap) = cap {
        let caps = json_lines(&cap.finish().0);
        assert!(!caps.is_empty(), "the chown checked CAP_CHOWN");
        assert!(caps.iter().all(|e| e["cap"] == 0 && e["ret"] == 0), "{caps:#?}");
    }
}

/// `kernsight trace ARGS` on a kernel without what the preset needs: it exits with an error
/// that names `missing` (bounded by `--duration` should it trace after all). None: no tracer.
fn refused(args: &[&str], missing: &str) -> Option<Tracer> {
    let out = Command::new(BINARY)
        .arg("trace")
        .args(args)
        .args(["--duration", "3s"])
        .output()
        .expect("run kernsight trace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "`trace {}` ran on a kernel without {missing}: {stderr}", args[0]);
    assert!(stderr.contains(missing), "the refusal names {missing}: {stderr}");
    None
}

fn getppid_1234() -> i32 {
    support::getppid_times(1234);
    0
}

#[test]
fn cgroup_filter_counts_exactly_in_the_kernel_and_reports_loss_each_interval() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-count");
    let mut tracer = Tracer::start(&[
        "syscall",
        "getppid",
        "--cgroup",
        path_str(&cgroup.path),
        "--count-by",
        "syscall",
        "--interval",
        "300ms",
    ]);
    assert_eq!(cgroup.run(getppid_1234), 0);
    // One interval line at least, then the final one.
    let interval = tracer.wait_for_stderr("lost ", Duration::from_secs(10));
    assert_eq!(interval, "lost 0 events");
    let (stdout, summary) = tracer.finish();
    let counted: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("getppid"))
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 1234, "getppid calls of the cgroup, over every interval:\n{stdout}");
    assert!(summary.contains("lost 0 events"), "{summary}");
}

#[test]
fn exit_in_a_cgroup_prints_each_process_end_in_order() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-exit");
    let script =
        Script::start("/bin/true; /bin/sh -c 'exit 3'; { /bin/sh -c 'kill -9 $$'; } 2>/dev/null; exit 4");
    std::fs::write(cgroup.path.join("cgroup.procs"), script.pid().to_string()).expect("join the cgroup");
    let tracer = Tracer::start(&["exit", "--cgroup", path_str(&cgroup.path), "-o", "json"]);
    // The script's own exit status is 4; `go` waits for it.
    let mut script = script;
    if let Some(mut stdin) = script.stdin.take() {
        stdin.write_all(b"go\n").expect("go");
    }
    let status = script.child.wait().expect("wait sh");
    assert_eq!(status.code(), Some(4));
    let (stdout, _) = tracer.finish();
    let seen: Vec<(String, u64, String)> = json_lines(&stdout)
        .iter()
        .map(|e| {
            let text = |f: &str| e[f].as_str().unwrap_or("").to_owned();
            (text("comm"), e["exit_code"].as_u64().unwrap_or(u64::MAX), text("how"))
        })
        .collect();
    let expected = [
        ("true", 0, "exited with status 0"),
        ("sh", 3 << 8, "exited with status 3"),
        ("sh", 9, "killed by SIGKILL"),
        ("sh", 4 << 8, "exited with status 4"),
    ]
    .map(|(c, code, how)| (c.to_owned(), code, how.to_owned()));
    assert_eq!(seen, expected, "{stdout}");
}

fn getppid_700() -> i32 {
    support::getppid_times(700);
    0
}

fn getppid_300() -> i32 {
    support::getppid_times(300);
    0
}

#[test]
fn counts_by_cgroup_are_made_in_the_kernel_and_exact() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let (a, b) = (TestCgroup::create("trace-by-a"), TestCgroup::create("trace-by-b"));
    let tracer = Tracer::start(&["syscall", "getppid", "--count-by", "cgroup,syscall", "-o", "json"]);
    assert_eq!(a.run(getppid_700), 0);
    assert_eq!(b.run(getppid_300), 0);
    let (stdout, summary) = tracer.finish();
    let count_of = |label: &str| -> Option<u64> {
        json_lines(&stdout)
            .iter()
            .find(|row| row["cgroup"] == label && row["syscall"] == "getppid")
            .and_then(|row| row["count"].as_u64())
    };
    assert_eq!(count_of(&a.label), Some(700), "{stdout}");
    assert_eq!(count_of(&b.label), Some(300), "{stdout}");
    assert!(summary.contains("lost 0 events"), "{summary}");
}

#[test]
fn syscall_latency_is_timed_in_the_kernel_per_call_and_in_histograms() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-latency");
    let cgroup_path = path_str(&cgroup.path);
    let records = Tracer::start(&["syscall", "nanosleep", "--cgroup", cgroup_path, "-o", "json"]);
    let histogram = Tracer::start(&[
        "syscall",
        "nanosleep",
        "--cgroup",
        cgroup_path,
        "--hist",
        "latency_ns",
        "--count-by",
        "syscall",
    ]);
    assert_eq!(cgroup.run(support::sleep_2ms_20_times), 0);
    let (stdout, summary) = records.finish();
    let latencies: Vec<u64> = json_lines(&stdout)
        .iter()
        .filter(|row| row["syscall"] == "nanosleep")
        .map(|row| row["latency_ns"].as_u64().unwrap_or_else(|| panic!("no latency_ns: {row}")))
        .collect();
    assert_eq!(latencies.len(), 20, "{stdout}");
    assert!(
        latencies.iter().all(|ns| (2_000_000..1_000_000_000).contains(ns)),
        "each sleep of 2 ms took 2 ms or more, measured from its entry: {latencies:?}"
    );
    assert!(summary.contains("lost 0 events"), "{summary}");
    let (drawn, _) = histogram.finish();
    assert_eq!(in_histogram(&drawn, "@latency_ns[nanosleep]:"), 20, "{drawn}");
}

/// What a workload can put in its file names, arguments and `comm`: clear the screen, return the
/// cursor over the line, and an 8-bit CSI (U+009B, which some terminals obey like ESC [).
const HOSTILE: &str = "\x1b[2J\r\u{9b}";
const HOSTILE_ESCAPED: &str = "\\x1b[2J\\r\\x9b";

#[test]
fn tables_escape_what_a_workload_puts_in_comm_argv_and_paths() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    // `comm` is the base name of what is exec'd: 12 bytes, within the kernel's 15.
    let program = dir.path().join(format!("ks{HOSTILE}cat"));
    std::fs::copy("/bin/cat", &program).expect("copy /bin/cat");
    let file = dir.path().join(format!("f{HOSTILE}x"));
    std::fs::write(&file, b"payload\n").expect("write the file");
    let cgroup = TestCgroup::create("trace-hostile");
    // The shell joins the cgroup, waits, then execs the program by its path, with the file's
    // path as argument (no quoting: both are passed as arguments of the shell).
    let mut shell = Command::new("/bin/sh");
    shell.args(["-c", "read go; exec \"$0\" \"$@\""]).arg(&program).arg(&file);
    let mut child =
        ChildGuard(shell.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start the shell"));
    std::fs::write(cgroup.path.join("cgroup.procs"), child.id().to_string()).expect("move the shell");
    let exec = Tracer::start(&["exec", "--cgroup", &cgroup.label]);
    let open = Tracer::start(&["open", "--cgroup", &cgroup.label, "--where", "ret >= 0"]);
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("let the shell go");
    let mut printed = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut printed).expect("read cat's output");
    assert!(child.wait().expect("wait").success() && printed == "payload\n", "cat ran: {printed:?}");

    let escaped_program = path_str(&program).replace(HOSTILE, HOSTILE_ESCAPED);
    let escaped_file = path_str(&file).replace(HOSTILE, HOSTILE_ESCAPED);
    let (exec_table, exec_summary) = exec.finish();
    let (open_table, open_summary) = open.finish();
    for (table, summary) in [(&exec_table, &exec_summary), (&open_table, &open_summary)] {
        assert!(summary.contains("lost 0 events"), "{summary}");
        assert!(
            !table.contains(['\x1b', '\r', '\u{9b}']),
            "a control character reached the terminal: {table:?}"
        );
    }
    // One exec: its comm, filename and both arguments, each escaped.
    let execs: Vec<&str> = exec_table.lines().skip(1).collect();
    assert_eq!(execs.len(), 1, "{exec_table}");
    let line = execs[0];
    assert!(line.contains(&format!(" ks{HOSTILE_ESCAPED}cat ")), "comm: {line}");
    assert!(line.contains(&format!(" {escaped_program} ")), "filename: {line}");
    assert!(line.ends_with(&format!("{escaped_program} {escaped_file}")), "argv: {line}");
    // cat's successful opens include the file, under its escaped path.
    assert!(
        open_table.lines().skip(1).any(|l| l.ends_with(&format!(" {escaped_file}"))),
        "the open of {escaped_file}: {open_table}"
    );
}

/// Distinct paths a workload opens: more than `trace::aggregate::MAX_KEYS` (65,536).
const DISTINCT_PATHS: u64 = 70_000;

/// `openat` of `DISTINCT_PATHS` missing files, each of its own name; 0. No allocation: this runs
/// in a child forked from the test's threads.
fn open_distinct_paths() -> i32 {
    let mut path = *b"/nonexistent-kernsight-keys/0000000\0";
    let digits = path.len() - 8..path.len() - 1;
    for i in 0..DISTINCT_PATHS {
        let mut n = i;
        for at in digits.clone().rev() {
            path[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        // SAFETY: a NUL-terminated path in a local buffer.
        unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr().cast(), libc::O_RDONLY) };
    }
    0
}

#[test]
fn a_workload_of_endless_distinct_paths_counts_past_the_bound_in_one_row() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-keys");
    let tracer = Tracer::start(&[
        "open",
        "--cgroup",
        path_str(&cgroup.path),
        "--count-by",
        "path",
        "--buffer-mib",
        "64",
        "-o",
        "json",
    ]);
    assert_eq!(cgroup.run(open_distinct_paths), 0);
    let (stdout, summary) = tracer.finish();
    assert!(summary.contains("lost 0 events"), "{summary}");
    let rows = json_lines(&stdout);
    let (other, keyed): (Vec<_>, Vec<_>) = rows.iter().partition(|row| row.get("other_keys").is_some());
    // The first 65,536 paths each have their row; the rest share the last one.
    assert_eq!(keyed.len(), 65_536);
    assert!(keyed.iter().all(|row| row["count"] == 1
        && row["path"].as_str().is_some_and(|p| p.starts_with("/nonexistent-kernsight-keys/"))));
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["count"], DISTINCT_PATHS - 65_536);
    assert!(rows.last().is_some_and(|row| row.get("other_keys").is_some()), "the other keys' row comes last");
}

/// The cgroup ids among the keys of the `TRACE_CGROUP_COUNTS` map that process `pid` holds.
fn counted_cgroups_of(pid: u32) -> Vec<u64> {
    // The maps the process holds, by the `map_id` of its descriptors' fdinfo.
    let held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("the tracer's fdinfo")
        .flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("map_id:")?.trim().parse().ok()))
        .collect();
    let show = Command::new("bpftool").args(["-j", "map", "show"]).output().expect("bpftool");
    let maps: serde_json::Value = serde_json::from_slice(&show.stdout).expect("bpftool's JSON");
    let id = maps
        .as_array()
        .expect("maps")
        .iter()
        .find(|map| {
            map["name"] == "TRACE_CGROUP_CO" && map["id"].as_u64().is_some_and(|id| held.contains(&id))
        })
        .and_then(|map| map["id"].as_u64())
        .unwrap_or_else(|| panic!("no TRACE_CGROUP_COUNTS map held by {pid}"));
    let dump =
        Command::new("bpftool").args(["-j", "map", "dump", "id", &id.to_string()]).output().expect("bpftool");
    let entries: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("bpftool's JSON");
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            let key = support::bpftool_bytes(&entry["key"]);
            u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))
        })
        .collect()
}

#[test]
fn counts_of_a_removed_cgroup_leave_the_kernel_map_and_none_is_lost() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    use std::os::unix::fs::MetadataExt as _;
    let (kept, removed) = (TestCgroup::create("trace-kept"), TestCgroup::create("trace-removed"));
    let removed_id = std::fs::metadata(&removed.path).expect("the cgroup").ino();
    let removed_label = removed.label.clone();
    let tracer = Tracer::start(&[
        "syscall",
        "getppid",
        "--count-by",
        "cgroup,syscall",
        "--interval",
        "300ms",
        "-o",
        "json",
    ]);
    let pid = tracer.child.id();
    assert_eq!(removed.run(getppid_300), 0);
    eventually(Duration::from_secs(10), || {
        let ids = counted_cgroups_of(pid);
        if ids.contains(&removed_id) { Ok(()) } else { Err(format!("{removed_id} not counted yet: {ids:?}")) }
    });
    drop(removed);
    // Found removed by the walk every 5 s, then dropped once its counts were printed.
    eventually(Duration::from_secs(20), || {
        let ids = counted_cgroups_of(pid);
        if ids.contains(&removed_id) { Err(format!("{removed_id} still counted: {ids:?}")) } else { Ok(()) }
    });
    assert_eq!(kept.run(getppid_700), 0);
    let (stdout, summary) = tracer.finish();
    let total = |label: &str| -> u64 {
        json_lines(&stdout)
            .iter()
            .filter(|row| row["cgroup"] == label && row["syscall"] == "getppid")
            .filter_map(|row| row["count"].as_u64())
            .sum()
    };
    assert_eq!(total(&removed_label), 300, "{stdout}");
    assert_eq!(total(&kept.label), 700, "{stdout}");
    assert!(summary.contains("lost 0 events"), "{summary}");
}
