//! OOM kills, end to end: a child allocates past its memory cgroup's limit, the kernel kills it,
//! and the agent reports the kill with the victim's pid and RSS by kind; a child that only fills
//! page cache inside its limit is not killed and its memory shows up as file memory.

use std::{
    ffi::CString,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    time::{Duration, Instant},
};

use crate::support::{
    Agent, ChildGuard, eventually,
    memory::{LIMIT, MIB, limited_cgroup, limited_parent, spawn_allocating_past_the_limit, touch_anonymous},
    parse, privileged, serial, skip, spawn_in, value, wait_status,
};
use kernsight::kernel::{mountinfo, resources};

/// Forks a child into `cgroup` that runs `workload`; returns its pid and wait status.
fn fork_into(cgroup: &Path, workload: fn() -> i32) -> (i32, i32) {
    let pid = spawn_in(cgroup, workload);
    (pid, wait_status(pid))
}

#[test]
fn an_oom_kill_is_reported_with_the_victims_pid_cgroup_and_anon_rss() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    report_one_kill();
}

/// Another tool's perf event on `oom:mark_victim`, attached before the agent, makes the kernel
/// run the agent's classic tracepoint program before its BTF one: the report is the same.
#[test]
fn an_oom_kill_is_reported_alike_with_bpftrace_on_mark_victim_first() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let Some(_bpftrace) = bpftrace_on_mark_victim() else { return };
    report_one_kill();
}

#[test]
fn the_kill_is_attributed_alike_with_bpftrace_on_mark_victim_first() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let Some(_bpftrace) = bpftrace_on_mark_victim() else { return };
    attribute_to_the_victims_cgroup();
}

/// A bpftrace counting `oom:mark_victim`, attached (its BEGIN probe runs after every probe is),
/// or `None` (the test skipped, and says so) when bpftrace is not installed.
fn bpftrace_on_mark_victim() -> Option<ChildGuard> {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Command, Stdio},
    };
    let program = "BEGIN { printf(\"ready\\n\"); } tracepoint:oom:mark_victim { @kills = count(); }";
    let mut bpftrace = match Command::new("bpftrace").args(["-e", program]).stdout(Stdio::piped()).spawn() {
        Ok(child) => ChildGuard(child),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            skip("bpftrace is not installed (cargo xtask setup installs it)");
            return None;
        }
        Err(err) => panic!("start bpftrace: {err}"),
    };
    let mut out = BufReader::new(bpftrace.stdout.take().expect("bpftrace stdout"));
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        let read = out.read_line(&mut line).expect("bpftrace stdout");
        assert!(read > 0, "bpftrace exited before attaching: {:?}", bpftrace.try_wait());
    }
    // Keep reading so that bpftrace never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Some(bpftrace)
}

fn report_one_kill() {
    let started = Instant::now();
    let agent = Agent::start(&[]);
    let cgroup = limited_cgroup("oom");
    let mut victim = ChildGuard(spawn_allocating_past_the_limit(&cgroup.path));
    let pid = victim.id();
    let status = victim.wait().expect("wait for dd");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the child should have been OOM-killed: {status}");

    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let kills = value(samples, "kernsight_oom_kills_total", &[("cgroup", &cgroup.label)]);
        if kills >= 1.0 { Ok(()) } else { Err(format!("no OOM kill counted in {}", cgroup.label)) }
    });
    let log = agent.log();
    assert_eq!(
        value(&samples, "kernsight_oom_kills_total", &[("cgroup", &cgroup.label)]),
        1.0,
        "one kill in {}; log:\n{log}",
        cgroup.label
    );
    let line = log
        .lines()
        .find(|l| l.contains("OOM kill") && l.contains(&format!("pid {pid})")))
        .unwrap_or_else(|| panic!("no OOM kill line for pid {pid}; log:\n{log}"));
    eprintln!("{line}");
    assert!(line.contains("WARN"), "logged at warn level: {line}");
    assert!(line.contains("cgroup_of=victim"), "the victim task's own cgroup: {line}");
    // The cgroup's memory beside the kill: its limit, what reclaim could not free, the headroom
    // between them, and the reclaim stalls on the way there.
    let field = |name: &str| -> &str {
        let key = format!("{name}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key.as_str()))
            .unwrap_or_else(|| panic!("no {name} in the OOM kill line: {line}"))
    };
    let number = |name: &str| -> f64 {
        field(name).parse().unwrap_or_else(|e| panic!("{name}={}: {e}: {line}", field(name)))
    };
    let (limit, unreclaimable, headroom) =
        (number("memory_limit_bytes"), number("unreclaimable_bytes"), number("headroom_bytes"));
    let (stalls, stall_seconds) = (number("reclaim_stalls"), number("reclaim_stall_seconds"));
    eprintln!(
        "at the kill: limit {limit}, unreclaimable {unreclaimable}, headroom {headroom}; {stalls} reclaim \
         stalls, {stall_seconds} s"
    );
    assert_eq!(limit, LIMIT as f64, "{line}");
    assert_eq!(headroom, limit - unreclaimable, "{line}");
    assert!(headroom <= limit, "{line}");
    assert!(stalls >= 0.0 && stall_seconds >= 0.0, "{line}");
    assert_eq!(stalls == 0.0, stall_seconds == 0.0, "a stall takes time: {line}");
    // Allocating past the limit reclaims before the kill: the cgroup's own stalls, up to the kill,
    // looked up by its keys (the scrape after it counts them all).
    let counted =
        value(&samples, "kernsight_memory_reclaim_stall_seconds_count", &[("cgroup", &cgroup.label)]);
    assert!(
        1.0 <= stalls && stalls <= counted,
        "{stalls} stalls at the kill, {counted} counted by the scrape: {line}"
    );
    let memory = |kind: &str| {
        value(&samples, "kernsight_oom_victim_memory_bytes", &[("cgroup", &cgroup.label), ("kind", kind)])
    };
    let anon = memory("anon");
    eprintln!(
        "victim pid {pid}: anon {:.1} MiB, file {:.1} MiB, shmem {:.1} MiB; {:?} after start",
        anon / MIB as f64,
        memory("file") / MIB as f64,
        memory("shmem") / MIB as f64,
        started.elapsed()
    );
    assert!(
        (24 * MIB) as f64 <= anon && anon <= (40 * MIB) as f64,
        "anon RSS at the kill {anon} should be near the 32 MiB limit"
    );
    // The cgroup's own count, from memory.oom_control / memory.events.
    assert_eq!(value(&samples, "kernsight_cgroup_oom_kills", &[("cgroup", &cgroup.label)]), 1.0);
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "oom")]), 1.0);
    assert_eq!(value(&samples, "kernsight_decode_errors_total", &[("source", "oom_events")]), 0.0);
    assert_eq!(value(&samples, "kernsight_oom_events_lost_total", &[]), 0.0);
}

/// 22 MiB, then waits to be killed.
fn hog() -> i32 {
    touch_anonymous(22 << 20);
    loop {
        // SAFETY: waits for a signal.
        unsafe { libc::pause() };
    }
}

/// 16 MiB: with the hog's 22 MiB, past the parent's 32 MiB.
fn grower() -> i32 {
    touch_anonymous(16 << 20)
}

/// The allocating task is not always the victim: when a parent cgroup's limit is reached, the
/// kernel kills the biggest task below it, here in a sibling cgroup of the allocating task's.
#[test]
fn the_kill_is_attributed_to_the_victims_cgroup_not_the_allocating_tasks() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    attribute_to_the_victims_cgroup();
}

fn attribute_to_the_victims_cgroup() {
    let agent = Agent::start(&[]);
    // Removed with their parent, the hog killed first, also when the test fails half-way.
    let parent = limited_parent("tree");
    let (hog_cgroup, grower_cgroup) = (parent.child("hog"), parent.child("grower"));
    let (hog_label, grower_label) = (hog_cgroup.label.clone(), grower_cgroup.label.clone());

    let hog_pid = spawn_in(&hog_cgroup.path, hog);
    // Wait until the hog holds its memory.
    let mounts = mountinfo::read().unwrap();
    eventually(Duration::from_secs(10), || {
        let read = resources::read(&resources::CgroupDirs::locate(&mounts, &hog_label));
        let anon = read.memory_by_kind.get("anon").copied().unwrap_or(0);
        if anon >= 20 * MIB { Ok(()) } else { Err(format!("the hog holds {anon} bytes of anonymous memory")) }
    });
    let (grower_pid, grower_status) = fork_into(&grower_cgroup.path, grower);
    let mut hog_status = 0;
    // SAFETY: our child; it was killed, or is killed now so that the test cannot hang.
    unsafe {
        if libc::waitpid(hog_pid, &mut hog_status, libc::WNOHANG) == 0 {
            libc::kill(hog_pid, libc::SIGTERM);
            libc::waitpid(hog_pid, &mut hog_status, 0);
        }
    }
    assert!(
        libc::WIFSIGNALED(hog_status) && libc::WTERMSIG(hog_status) == libc::SIGKILL,
        "the hog should have been OOM-killed (grower status {grower_status:#x}), hog status {hog_status:#x}"
    );
    // The kernel may pick a second victim, the grower itself, when the hog's memory is not freed
    // before the grower's next charge: then that kill must be counted under the grower.
    let grower_killed = libc::WIFSIGNALED(grower_status) && libc::WTERMSIG(grower_status) == libc::SIGKILL;
    assert!(grower_killed || libc::WIFEXITED(grower_status), "the grower: {grower_status:#x}");

    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let kills = value(samples, "kernsight_oom_kills_total", &[("cgroup", &hog_label)]);
        if kills >= 1.0 { Ok(()) } else { Err(format!("no OOM kill counted in {hog_label}")) }
    });
    let log = agent.log();
    assert_eq!(value(&samples, "kernsight_oom_kills_total", &[("cgroup", &hog_label)]), 1.0, "log:\n{log}");
    let grower_kills = value(&samples, "kernsight_oom_kills_total", &[("cgroup", &grower_label)]);
    assert_eq!(grower_kills, f64::from(u8::from(grower_killed)), "the grower's kills are its own only");
    let line = log.lines().find(|l| l.contains(&format!("pid {hog_pid})"))).expect("a line for the hog");
    eprintln!("{line}");
    assert!(line.contains("cgroup_of=victim"), "{line}");
    assert!(line.contains(&format!("invoker_pid={grower_pid}")), "the grower ran the OOM killer: {line}");
}

const CACHE_FILE_BYTES: usize = 16 << 20;
/// Set before the fork: the workload is a plain `fn`.
static CACHE_FILE: std::sync::OnceLock<CString> = std::sync::OnceLock::new();

/// Writes a 16 MiB file on disk (not tmpfs) and reads it back: page cache, within the limit.
fn fill_page_cache() -> i32 {
    let Some(path) = CACHE_FILE.get() else { return 5 };
    // SAFETY: raw syscalls on a file the test created the directory of.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
        if fd < 0 {
            return 3;
        }
        let chunk = [0x5au8; 65536];
        for _ in 0..CACHE_FILE_BYTES / chunk.len() {
            if libc::write(fd, chunk.as_ptr().cast(), chunk.len()) != chunk.len() as isize {
                return 4;
            }
        }
        let mut buffer = [0u8; 65536];
        libc::lseek(fd, 0, libc::SEEK_SET);
        while libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) > 0 {}
        libc::close(fd);
        0
    }
}

#[test]
fn page_cache_within_the_limit_is_file_memory_and_no_kill() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&[]);
    let cgroup = limited_cgroup("cache");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("cache");
    let bytes = file.as_os_str().as_encoded_bytes();
    CACHE_FILE.set(CString::new(bytes).unwrap()).unwrap();
    let (_pid, status) = fork_into(&cgroup.path, fill_page_cache);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "wait status {status:#x}");

    let mounts = mountinfo::read().unwrap();
    let read = resources::read(&resources::CgroupDirs::locate(&mounts, &cgroup.label));
    let kind = |k: &str| read.memory_by_kind.get(k).copied().unwrap_or(0);
    eprintln!(
        "page cache cgroup: file {:.1} MiB, anon {:.1} MiB, oom_kill {:?}",
        kind("file") as f64 / MIB as f64,
        kind("anon") as f64 / MIB as f64,
        read.memory_events.get("oom_kill")
    );
    assert!(kind("file") >= 8 * MIB, "page cache charged to the cgroup: {read:?}");
    assert!(kind("anon") < 4 * MIB, "little anonymous memory: {read:?}");
    assert_eq!(read.memory_events.get("oom_kill").copied().unwrap_or(0), 0);

    // An absence: no event to wait for, so the agent gets half a second in which a wrongly
    // reported kill would show.
    std::thread::sleep(Duration::from_millis(500));
    let samples = parse(&agent.scrape());
    assert_eq!(value(&samples, "kernsight_oom_kills_total", &[("cgroup", &cgroup.label)]), 0.0);
    drop(std::fs::remove_file(&file));
    // Drop the cached pages so that the cgroup can go without leaving charges behind.
    let _ = std::fs::write(cgroup.path.join("memory.force_empty"), "0");
}

/// The kills of a cgroup removed for `forget_after_seconds` leave the scrape, as every
/// per-cgroup series does (a crash-looping pod's cgroups would otherwise stay exported); the
/// kills of a cgroup that lives stay.
#[test]
fn the_kills_of_a_removed_cgroup_are_forgotten_after_the_grace() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let (_dir, config) = crate::support::config_file("[syscalls]\nforget_after_seconds = 1\n");
    let agent = Agent::start(&["--config", crate::support::path_str(&config)]);
    let (removed, kept) = (limited_cgroup("oom-removed"), limited_cgroup("oom-kept"));
    for cgroup in [&removed, &kept] {
        let mut victim = ChildGuard(spawn_allocating_past_the_limit(&cgroup.path));
        let status = victim.wait().expect("wait for the victim");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "OOM-killed in {}: {status}", cgroup.label);
    }
    let kills = |samples: &[crate::support::Sample], label: &str| {
        value(samples, "kernsight_oom_kills_total", &[("cgroup", label)])
    };
    agent.scrape_until(Duration::from_secs(20), |samples| {
        match (kills(samples, &removed.label), kills(samples, &kept.label)) {
            (1.0, 1.0) => Ok(()),
            other => Err(format!("kills counted (removed, kept): {other:?}")),
        }
    });
    let label = removed.label.clone();
    drop(removed);
    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let left = samples.iter().filter(|s| s.labels.get("cgroup") == Some(&label)).count();
        if left == 0 { Ok(()) } else { Err(format!("{left} series of removed {label} still exported")) }
    });
    assert_eq!(kills(&samples, &kept.label), 1.0, "the living cgroup's kill stays");
}
