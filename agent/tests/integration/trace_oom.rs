//! `kernsight trace oom`: a child of the test allocates past its memory cgroup's limit; the trace
//! shows the kill with the victim's pid, name and resident memory from `oom:mark_victim`.

use std::{
    io::{BufRead as _, BufReader, Read},
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::support::{
    BINARY, ChildGuard, eventually,
    memory::{limited_cgroup, spawn_allocating_past_the_limit},
    privileged, serial,
};

/// The lines of a child's pipe, as they come, read on a thread of their own.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn oom_preset_shows_the_victim() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = limited_cgroup("trace-oom");
    let mut tracer = ChildGuard(
        Command::new(BINARY)
            .args(["trace", "oom", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trace"),
    );
    let ready = lines_of(tracer.stderr.take().expect("stderr"));
    let ready = ready.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    assert!(ready.starts_with("tracing oom"), "{ready}");
    let printed = lines_of(tracer.stdout.take().expect("stdout"));
    let mut victim = ChildGuard(spawn_allocating_past_the_limit(&cgroup.path));
    let pid = victim.id();
    let status = victim.wait().expect("wait for dd");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "OOM-killed: {status}");
    // Until the victim's event is printed (other OOM kills on the machine may show too).
    let of_victim =
        |line: &String| serde_json::from_str::<serde_json::Value>(line).is_ok_and(|e| e["args.pid"] == pid);
    let mut stdout = Vec::new();
    eventually(Duration::from_secs(10), || {
        stdout.extend(printed.try_iter());
        if stdout.iter().any(of_victim) { Ok(()) } else { Err(format!("no event of pid {pid}: {stdout:#?}")) }
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().expect("wait").success());
    stdout.extend(printed.iter());
    let stdout = stdout.join("\n");
    let events: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    // Other OOM kills on the machine may show too: the victim's is the one with its pid.
    let victim: Vec<&serde_json::Value> = events.iter().filter(|e| e["args.pid"] == pid).collect();
    assert_eq!(victim.len(), 1, "one kill of {pid}: {stdout}");
    let kill = victim[0];
    let anon_kib = kill["anon_rss"].as_u64().unwrap_or(0);
    assert!((16 * 1024..=64 * 1024).contains(&anon_kib), "anon RSS near the 32 MiB limit, in KiB: {kill}");
    assert!(
        kill["total_vm"].as_u64().unwrap_or(0) >= 64 * 1024,
        "the 64 MiB mapping counts in total_vm: {kill}"
    );
    assert!(!kill["args.comm"].as_str().unwrap_or("").is_empty(), "{kill}");
}
