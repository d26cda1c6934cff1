//! `kernsight trace oom`: a child of the test allocates past its memory cgroup's limit; the trace
//! shows the kill with the victim's pid, name and resident memory from `oom:mark_victim`.

mod support;

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use support::{BINARY, TestCgroup, privileged, serial};

const LIMIT: u64 = 32 * 1024 * 1024;
const ALLOCATE: usize = 64 << 20;

/// A memory cgroup limited to `LIMIT`: v1 where memory is a v1 controller, else v2.
fn limited_cgroup(tag: &str) -> TestCgroup {
    match support::v1_root("memory") {
        Some(root) => {
            let cgroup = TestCgroup::create_in(&root, tag);
            std::fs::write(cgroup.path.join("memory.limit_in_bytes"), LIMIT.to_string()).expect("limit");
            let memsw = cgroup.path.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let _ = std::fs::write(memsw, LIMIT.to_string());
            }
            cgroup
        }
        None => {
            let cgroup = TestCgroup::create(tag);
            std::fs::write(cgroup.path.join("memory.max"), LIMIT.to_string()).expect("limit");
            let _ = std::fs::write(cgroup.path.join("memory.swap.max"), "0");
            cgroup
        }
    }
}

/// Forks a child into `cgroup` that touches 64 MiB of anonymous memory; returns its pid and
/// wait status.
fn allocate_in(cgroup: &TestCgroup) -> (i32, i32) {
    let procs =
        CString::new(cgroup.path.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("path");
    // SAFETY: the child only makes raw syscalls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(101);
            }
            libc::close(fd);
            let memory = libc::mmap(
                std::ptr::null_mut(),
                ALLOCATE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if memory == libc::MAP_FAILED {
                libc::_exit(2);
            }
            for page in (0..ALLOCATE).step_by(4096) {
                memory.cast::<u8>().add(page).write_volatile(1);
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        (pid, status)
    }
}

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
    let (pid, status) = allocate_in(&cgroup);
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
