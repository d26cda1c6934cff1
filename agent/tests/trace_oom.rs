//! `kernsight trace oom`: a child of the test allocates past its memory cgroup's limit; the trace
//! shows the kill with the victim's pid, name and resident memory from `oom:mark_victim`.

mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use support::{
    BINARY,
    memory::{allocate_past_the_limit, limited_cgroup},
    privileged, serial, spawn_in, wait_status,
};

#[test]
fn oom_preset_shows_the_victim() {
    if !privileged("oom_preset_shows_the_victim") {
        return;
    }
    let _serial = serial();
    let cgroup = limited_cgroup("trace-oom");
    let mut tracer = Command::new(BINARY)
        .args(["trace", "oom", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace");
    let stderr = tracer.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    assert!(ready.starts_with("tracing oom"), "{ready}");
    let pid = spawn_in(&cgroup.path, allocate_past_the_limit);
    let status = wait_status(pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "OOM-killed: {status}");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let mut stdout = String::new();
    tracer.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read");
    assert!(tracer.wait().expect("wait").success());
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
