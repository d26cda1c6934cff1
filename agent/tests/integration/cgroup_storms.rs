//! Tenants choose cgroup names: paths longer than the kernel passes with a lifecycle event, and
//! names that are not UTF-8, created by the hundred with processes exec'ing and exiting in them,
//! must neither make the agent walk cgroupfs once per cgroup nor stall its HTTP face. The agent
//! looks such ids up by file handle, or walks at most once per debounce interval, off the event
//! loop; odd names become escaped labels.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::{
    self, Agent, Sample, TestCgroup, config_file, getppid_times, http_get, parse, path_str, privileged,
    spawn_in, value, wait_status,
};

/// cgroups of the storm: half with 255-byte names (their paths reach the agent cut), half with
/// names that are not UTF-8 (some of them 255 bytes too).
const STORM: usize = 500;
/// Plain cgroups that make each walk cost what it costs on a busy node.
const BALLAST: usize = 1500;
/// Every this many storm cgroups, a process execs (and exits) in the newest one.
const EXEC_EVERY: usize = 10;
const WALK_INTERVAL: Duration = Duration::from_millis(1000);
const HEALTHZ_P99_LIMIT: Duration = Duration::from_millis(100);
const GETPPID: usize = 3_000;
/// /healthz answers a storm's p99 is taken over, at the least.
const MIN_ANSWERS: usize = 20;

/// The `i`-th storm cgroup's name: 255 bytes of ASCII, or bytes that are not UTF-8.
fn storm_name(i: usize) -> Vec<u8> {
    let tag = format!("-{i:04}");
    match i % 4 {
        // 255 bytes: the longest name cgroupfs takes; the whole path is past what events carry.
        0 | 2 => {
            let mut name = vec![b'l'; 255 - tag.len()];
            name.extend_from_slice(tag.as_bytes());
            name
        }
        // Short, not UTF-8: a complete path in the event, escaped in its label.
        1 => [&b"\xff\xfe"[..], tag.as_bytes()].concat(),
        // 255 bytes, not UTF-8: cut in the event, its label bounded.
        _ => {
            let mut name = vec![0xc3; 255 - tag.len()];
            name.extend_from_slice(tag.as_bytes());
            name
        }
    }
}

/// Runs `/bin/true` in the cgroup directory `dir` (an exec and an exit there).
fn exec_true_in(dir: &Path) -> i32 {
    let program = c"/bin/true";
    let argv = [program.as_ptr(), std::ptr::null()];
    // SAFETY: execv with a NUL-terminated program and argument vector made before the fork; the
    // child leaves by the exec or by _exit.
    spawn_in(dir, move || unsafe {
        libc::execv(program.as_ptr(), argv.as_ptr());
        libc::_exit(127)
    })
}

/// Nice value of the agent and of the /healthz probe: the machines that run these tests are
/// shared and often have several runnable tasks per CPU, and a thread that waits for a CPU for
/// 300 ms says nothing about the agent. The storm's own processes run at the normal priority.
const PROBE_NICE: i32 = -10;

/// Renices every thread of a process (setpriority applies to one thread on Linux); threads it
/// starts later inherit the value.
fn renice_threads(pid: u32, nice: i32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the agent's threads");
    for tid in tasks.flatten().filter_map(|t| t.file_name().to_str().and_then(|t| t.parse::<u32>().ok())) {
        // SAFETY: setpriority on a thread of our own child.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    }
}

/// /healthz, asked every 5 ms from another thread until stopped: the latency of each answer.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    answers: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl HealthProbe {
    fn start(agent: &Agent) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let address = agent.address;
        let flag = stop.clone();
        let answers = Arc::new(AtomicUsize::new(0));
        let counted = answers.clone();
        renice_threads(agent.pid(), PROBE_NICE);
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions; setpriority on this thread.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, PROBE_NICE) };
            let mut latencies = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let (status, _) = http_get(address, "/healthz", "*/*");
                latencies.push(asked.elapsed());
                counted.fetch_add(1, Ordering::Relaxed);
                assert_eq!(status, 200, "/healthz during the storm");
                std::thread::sleep(Duration::from_millis(5));
            }
            latencies
        });
        Self { stop, answers, thread }
    }

    /// (p99, max, answers) once the probe has asked at least `MIN_ANSWERS` times (within 10 s):
    /// on a fast machine a storm and its walks can be over in about 100 ms, 20 probes' worth,
    /// and a p99 needs answers to be one.
    fn finish(self) -> (Duration, Duration, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.answers.load(Ordering::Relaxed) < MIN_ANSWERS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.thread.join().expect("the /healthz thread");
        latencies.sort();
        let p99 = latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)];
        (p99, *latencies.last().unwrap_or(&Duration::ZERO), latencies.len())
    }
}

fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels)
}

/// What a storm cost: counters before and after, read from `/metrics`.
struct Cost {
    walks: f64,
    requests: f64,
    coalesced: f64,
    found_by_handle: f64,
    lost_events: f64,
}

impl Cost {
    /// The counters once no walk request is pending: a request made just before the baseline
    /// (the node's own cgroups come and go, and a late block I/O completion can name a removed
    /// one) and answered after it would count as a walk without its request. Two reads two walk
    /// intervals apart that agree, within 10 s.
    fn settled(agent: &Agent) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = Self::read(agent);
        loop {
            std::thread::sleep(WALK_INTERVAL * 2);
            let now = Self::read(agent);
            let quiet =
                (now.requests, now.walks, now.coalesced) == (last.requests, last.walks, last.coalesced);
            if quiet || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn read(agent: &Agent) -> Self {
        let samples = parse(&agent.scrape());
        Self {
            walks: counter(&samples, "kernsight_cgroup_walks_total", &[]),
            requests: counter(&samples, "kernsight_cgroup_walk_requests_total", &[]),
            coalesced: counter(&samples, "kernsight_cgroup_walk_requests_coalesced_total", &[]),
            found_by_handle: counter(
                &samples,
                "kernsight_cgroup_handle_lookups_total",
                &[("result", "found")],
            ),
            lost_events: counter(&samples, "kernsight_cgroup_events_lost_total", &[]),
        }
    }
}

/// The storm under a parent cgroup with ballast, `/healthz` asked throughout, and what it cost
/// checked: walks, their requests, lookups, latency.
fn storm(by_handle: bool) {
    let parent = TestCgroup::create(if by_handle { "storm-handle" } else { "storm-walk" });
    let ballast_started = Instant::now();
    for i in 0..BALLAST {
        let dir = parent.path.join(format!("ballast-{}/b{i}", i / 100));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    eprintln!("{BALLAST} ballast cgroups in {:?}", ballast_started.elapsed());
    let (_dir, config) = config_file(&format!(
        "[metadata]\ncgroup_lookup_by_handle = {by_handle}\ncgroup_walk_interval_milliseconds = {}\n",
        WALK_INTERVAL.as_millis()
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let before = Cost::settled(&agent);
    let probe = HealthProbe::start(&agent);

    let started = Instant::now();
    let mut children = Vec::new();
    let mut storm_dirs: Vec<PathBuf> = Vec::new();
    for i in 0..STORM {
        let dir = parent.path.join(OsStr::from_bytes(&storm_name(i)));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        if i % EXEC_EVERY == EXEC_EVERY - 1 {
            children.push(exec_true_in(&dir));
        }
        storm_dirs.push(dir);
    }
    for child in children {
        let status = wait_status(child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "/bin/true in a storm cgroup: {status}"
        );
    }
    let storm_took = started.elapsed();

    // A workload in a long-named cgroup (its path reached the agent cut) and one in a cgroup
    // named with bytes that are not UTF-8: each counted under its full, escaped path.
    let long = &storm_dirs[0];
    let odd = &storm_dirs[1];
    for dir in [long, odd] {
        let status = wait_status(spawn_in(dir, || {
            getppid_times(GETPPID);
            0
        }));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "workload in {}", dir.display());
    }
    let long_label = format!("{}/{}", parent.label, String::from_utf8(storm_name(0)).unwrap());
    let odd_label = format!("{}/\\xff\\xfe-0001", parent.label);
    agent.scrape_until(Duration::from_secs(30), |samples| {
        for label in [&long_label, &odd_label] {
            let counted = value(
                samples,
                "kernsight_syscalls_total",
                &[("cgroup", label.as_str()), ("syscall", "getppid")],
            );
            if counted < GETPPID as f64 {
                return Err(format!("{counted} getppid counted under {label:?}"));
            }
        }
        Ok(())
    });
    let named_after = started.elapsed();
    // Every request is answered by a walk, its own or one it joined: once the last walk is
    // done, requests = walks + coalesced (a request may still wait for its interval to pass).
    let settled = support::poll(WALK_INTERVAL * 5, || {
        let cost = Cost::read(&agent);
        let (requests, walks, coalesced) =
            (cost.requests - before.requests, cost.walks - before.walks, cost.coalesced - before.coalesced);
        if requests == walks + coalesced {
            Ok(cost)
        } else {
            Err(format!("{requests} walk requests, {walks} walks, {coalesced} coalesced"))
        }
    });
    let after = settled.unwrap_or_else(|last| panic!("walk requests unanswered: {last}"));
    let settled_after = started.elapsed();
    // The probe ran through the storm and every walk it asked for.
    let (p99, max, answers) = probe.finish();

    let walks = after.walks - before.walks;
    let requests = after.requests - before.requests;
    let coalesced = after.coalesced - before.coalesced;
    let found = after.found_by_handle - before.found_by_handle;
    let lost = after.lost_events - before.lost_events;
    // One walk per interval begun since the storm started, and the one a request may start at
    // once.
    let allowed = (settled_after.as_secs_f64() / WALK_INTERVAL.as_secs_f64()).ceil() + 1.0;
    eprintln!(
        "by_handle={by_handle}: {STORM} cgroups (+{BALLAST} ballast) in {storm_took:?}, all named after {named_after:?}: \
         {walks} walks (at most {allowed}), {requests} walk requests, {coalesced} coalesced, {found} found by handle, \
         {lost} events lost; /healthz p99 {p99:?}, max {max:?} over {answers} answers"
    );
    assert!(walks <= allowed, "{walks} walks in {settled_after:?}: more than one per {WALK_INTERVAL:?}");
    assert!(
        p99 < HEALTHZ_P99_LIMIT,
        "/healthz p99 {p99:?} during the storm (max {max:?}, {answers} answers)"
    );
    assert!(answers >= MIN_ANSWERS, "/healthz answered {answers} times during the storm");
    // Every odd name is a label of its own, every cut path found: no cgroup_id: series for them.
    let samples = parse(&agent.scrape());
    let unnamed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.labels.get("cgroup").is_some_and(|c| c.starts_with("cgroup_id:")))
        .filter(|s| s.name == "kernsight_process_execs_total" || s.name == "kernsight_syscalls_total")
        .collect();
    assert!(unnamed.is_empty(), "series without a path: {unnamed:?}");
    if by_handle {
        // 250 paths arrived cut: each looked up by handle, none needing a walk.
        assert!(found >= (STORM / 2) as f64, "{found} ids found by handle, expected at least {}", STORM / 2);
        assert!(walks <= f64::from(lost > 0.0), "{walks} walks although every id was found by handle");
    } else {
        // The cut paths that no walk had named yet when the resolver reached them asked for one.
        assert!(walks >= 1.0, "no walk named the cut paths");
        assert!(
            coalesced >= (STORM / 4) as f64 && coalesced > walks,
            "{requests} requests, {walks} walks, {coalesced} coalesced: the requests of a burst share walks"
        );
    }
    // The exec'd processes are counted under their (long, escaped) cgroups too.
    let execs: f64 = samples
        .iter()
        .filter(|s| s.name == "kernsight_process_execs_total")
        .filter(|s| s.labels.get("cgroup").is_some_and(|c| c.starts_with(&format!("{}/", parent.label))))
        .map(|s| s.value)
        .sum();
    assert!(execs >= (STORM / EXEC_EVERY) as f64, "{execs} execs counted under the storm's cgroups");
    drop(agent);
}

#[test]
fn cut_and_odd_cgroup_names_are_looked_up_by_handle_without_walks() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    storm(true);
}

#[test]
fn without_handles_walks_are_debounced_and_coalesced() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    storm(false);
}

/// cgroups a workload creates and removes without end, faster than a grace period forgets them:
/// the agent keeps at most `MAX_REMOVED_KEPT` removals (each with its path), counts those it
/// forgets early, and answers `/healthz` throughout.
#[test]
fn cgroups_created_and_removed_without_end_keep_the_agent_bounded() {
    use kernsight::kernel::cgroupfs::MAX_REMOVED_KEPT;

    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let parent = TestCgroup::create("churn");
    let agent = Agent::start(&[]);
    let probe = HealthProbe::start(&agent);
    const CHURN: usize = 100_000;
    let started = Instant::now();
    for i in 0..CHURN {
        let dir = parent.path.join(format!("c{i}"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
    let churn_took = started.elapsed();
    let samples = agent.scrape_until(Duration::from_secs(60), |samples| {
        let applied = counter(samples, "kernsight_cgroup_events_total", &[("event", "removed")]);
        let lost = counter(samples, "kernsight_cgroup_events_lost_total", &[]);
        if applied >= CHURN as f64 || lost > 0.0 {
            Ok(())
        } else {
            Err(format!("{applied} removals applied of {CHURN}"))
        }
    });
    let (p99, max, answers) = probe.finish();
    let entries = counter(&samples, "kernsight_cgroup_index_entries", &[]);
    let forgotten = counter(&samples, "kernsight_cgroup_removals_forgotten_early_total", &[]);
    let lost = counter(&samples, "kernsight_cgroup_events_lost_total", &[]);
    eprintln!(
        "{CHURN} cgroups made and removed in {churn_took:?}: index {entries} entries, {forgotten} removals \
         forgotten early, {lost} events lost; /healthz p99 {p99:?}, max {max:?} over {answers}"
    );
    // Without the bound every removal stays 300 s: the index would hold them all.
    let living = support::cgroup::all_roots().iter().map(|root| count_dirs(root)).sum::<usize>();
    assert!(
        entries <= (MAX_REMOVED_KEPT + living) as f64,
        "{entries} entries: more than {MAX_REMOVED_KEPT} removals and {living} living cgroups"
    );
    if lost == 0.0 {
        // Every removal reached the index: all but the bound's were forgotten early.
        assert!(forgotten >= (CHURN - MAX_REMOVED_KEPT) as f64, "{forgotten} forgotten early of {CHURN}");
    }
    assert!(p99 < HEALTHZ_P99_LIMIT, "/healthz p99 {p99:?} during the churn");
}

/// The directories under `root`, itself included (the living cgroups of a hierarchy).
fn count_dirs(root: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        count += 1;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    count
}
