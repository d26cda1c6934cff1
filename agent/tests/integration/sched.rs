//! Scheduler and process lifecycle, end to end: run-queue latency and exec/exit counts of
//! workloads the test forks into cgroups it created, read back over HTTP.

use crate::support;

use std::time::Duration;

use crate::support::{Agent, SwitchWatch, TestCgroup, eventually, parse, privileged, value};

/// Pins the calling process to one CPU (raw syscall: safe after fork).
pub(crate) fn pin_to(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spins for `ns` nanoseconds of wall time.
pub(crate) fn spin(ns: u64) {
    let end = now_ns() + ns;
    while now_ns() < end {
        std::hint::spin_loop();
    }
}

/// Forks a child that runs `f` and `_exit`s with its result; returns its pid.
pub(crate) fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child calls only async-signal-safe functions and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(f());
        }
        pid
    }
}

/// Two processes spinning `ns` each on CPU `cpu`, so that each waits while the other runs: 0 once
/// both exited cleanly, 2 if the CPU could not be pinned, 3 if a child failed.
pub(crate) fn two_spinners_on(cpu: usize, ns: u64) -> i32 {
    if !pin_to(cpu) {
        return 2;
    }
    let children: Vec<_> = (0..2)
        .map(|_| {
            fork_child(|| {
                spin(ns);
                0
            })
        })
        .collect();
    if children.iter().all(|&pid| pid > 0 && wait(pid) == 0) { 0 } else { 3 }
}

/// Waits for `pid`; returns the raw wait status (or -1).
pub(crate) fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return -1;
    }
    status
}

/// Histogram of `cgroup`: (count, count at or below `le`).
fn runqueue(samples: &[support::Sample], cgroup: &str, le: &str) -> (f64, f64) {
    let count = value(samples, "kernsight_runqueue_latency_seconds_count", &[("cgroup", cgroup)]);
    let below =
        value(samples, "kernsight_runqueue_latency_seconds_bucket", &[("cgroup", cgroup), ("le", le)]);
    (count, below)
}

/// The name the sleeping workload takes, which the switch watch records.
const SLEEPER_COMM: &std::ffi::CStr = c"ks-runq-sleeper";

#[test]
fn runqueue_latency_sees_contention_and_not_in_the_idle_sibling() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let contended = TestCgroup::create("runq-busy");
    let sleeper = TestCgroup::create("runq-sleep");
    // Two spinning processes share CPU 1 for a second: each waits while the other runs.
    let code = contended.run(|| two_spinners_on(1, 1_000_000_000));
    assert_eq!(code, 0, "the contended workload failed");
    // One process sleeping 5 ms at a time on CPU 0: it wakes up to a CPU that is mostly free.
    let watch = SwitchWatch::start(SLEEPER_COMM.to_str().unwrap())
        .inspect_err(|why| eprintln!("switches not watched ({why}): every wakeup is expected"))
        .ok();
    let code = sleeper.run(|| {
        // SAFETY: a raw syscall on a constant name.
        if !pin_to(0) || unsafe { libc::prctl(libc::PR_SET_NAME, SLEEPER_COMM.as_ptr()) } != 0 {
            return 2;
        }
        let five_ms = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
        for _ in 0..50 {
            unsafe { libc::syscall(libc::SYS_nanosleep, &five_ms, std::ptr::null_mut::<libc::timespec>()) };
        }
        0
    });
    assert_eq!(code, 0, "the sleeping workload failed");

    let text = agent.scrape();
    let samples = parse(&text);
    let (count, below_1ms) = runqueue(&samples, &contended.label, "0.001048576");
    let sum = value(&samples, "kernsight_runqueue_latency_seconds_sum", &[("cgroup", &contended.label)]);
    eprintln!("contended: {count} switches-in, {} above 1 ms, {sum:.3} s waited", count - below_1ms);
    assert!(count > 0.0, "no run-queue sample for {}", contended.label);
    assert!(count - below_1ms > 0.0, "two spinners on one CPU waited more than 1 ms at least once");
    // Each spinner waited while the other ran: together about a second of waiting.
    assert!(sum > 0.3, "the spinners waited {sum} s in total");

    let (count, below_65ms) = runqueue(&samples, &sleeper.label, "0.067108864");
    let (_, below_16ms) = runqueue(&samples, &sleeper.label, "0.016777216");
    // A switch in that the tracepoint hid from every tracer (see `SwitchWatch`) cannot be
    // counted; every one it reported must be.
    let hidden = watch.as_ref().map_or(0, SwitchWatch::hidden_switches);
    eprintln!(
        "sleeper: {count} switches-in, {} above 16 ms, {} above 65 ms, {hidden} switches hidden",
        count - below_16ms,
        count - below_65ms
    );
    let expected = 50usize.saturating_sub(hidden) as f64;
    assert!(count >= expected, "{expected} wakeups of the sleeper ({hidden} switches hidden), got {count}");
    assert_eq!(count, below_65ms, "the sleeper never waited 65 ms for a CPU");
    assert!(count - below_16ms <= count / 10.0, "at least 90% of the sleeper's waits are below 16 ms");
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "runqueue")]), 1.0);
    assert!(text.contains("kernsight_bpf_map_entries{map=\"RUNQ_LATENCY\"}"));
}

/// Waits for the child `pid` to exit without reaping it, then reads the kernel's account of its
/// run-queue wait (`/proc/PID/schedstat`'s second field, `sched_info.run_delay`, ns), which an
/// exited task keeps until it is reaped; then reaps it. (run_delay, wait status).
fn run_delay_at_exit(pid: libc::pid_t) -> (u64, i32) {
    // SAFETY: waiting for our own child; the siginfo is written by the kernel.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let waited =
        unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(waited, 0, "waitid for {pid}");
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    let run_delay = schedstat.split_whitespace().nth(1).and_then(|f| f.parse().ok());
    let status = support::wait_status(pid);
    (run_delay.unwrap_or_else(|| panic!("no run_delay in {schedstat:?}")), status)
}

#[test]
fn runqueue_waits_sum_to_the_kernels_own_account_of_them() {
    waits_sum_to_the_kernels_account("");
}

/// Without the reason, `sched_switch` alone runs where the scheduler keeps its account.
#[test]
fn runqueue_waits_sum_to_the_kernels_own_account_of_them_without_the_reason() {
    waits_sum_to_the_kernels_account("[sched]\nwait_reason = false\n");
}

/// With every wait stamped by the wakeup programs.
#[test]
fn runqueue_waits_sum_to_the_kernels_own_account_of_them_with_stamped_waits() {
    waits_sum_to_the_kernels_account("[sched]\nwait_start = \"wakeup\"\n");
}

/// Two spinners on one CPU in a cgroup of the test's, with the agent on `config`: kernsight's
/// sum of their waits is the kernel's.
fn waits_sum_to_the_kernels_account(config: &str) {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = support::config_file(config);
    let agent = Agent::start(&["--config", support::path_str(&config)]);
    let cgroup = TestCgroup::create("runq-schedstat");
    // A child's waits before it joined the cgroup (its first, at fork, was in this test's own
    // cgroup) are the kernel's only: each child sends its run_delay once it is in the cgroup.
    let mut pipe = [0; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0, "pipe");
    let [joined_read, joined_write] = pipe;
    // Two processes spinning 400 ms each on CPU 1 wait for each other.
    let spinner = || {
        let joined = own_run_delay();
        // SAFETY: 8 bytes from a local into our pipe (atomic: under PIPE_BUF).
        if unsafe { libc::write(joined_write, (&raw const joined).cast(), 8) } != 8 {
            return 3;
        }
        if !pin_to(1) {
            return 2;
        }
        spin(400_000_000);
        0
    };
    let pids = [support::spawn_in(&cgroup.path, spinner), support::spawn_in(&cgroup.path, spinner)];
    let mut kernel_ns = 0;
    for pid in pids {
        let (run_delay, status) = run_delay_at_exit(pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "spinner {pid}: status {status}");
        kernel_ns += run_delay;
    }
    let mut before_joining = 0;
    for _ in pids {
        let mut joined = 0u64;
        // SAFETY: 8 bytes into a local; both children wrote theirs before exiting.
        assert_eq!(unsafe { libc::read(joined_read, (&raw mut joined).cast(), 8) }, 8, "a child's run_delay");
        assert_ne!(joined, u64::MAX, "a child could not read its schedstat");
        before_joining += joined;
    }
    unsafe { libc::close(joined_read) };
    unsafe { libc::close(joined_write) };
    let samples = parse(&agent.scrape());
    let measured = value(&samples, "kernsight_runqueue_latency_seconds_sum", &[("cgroup", &cgroup.label)]);
    let kernel = (kernel_ns - before_joining) as f64 / 1e9;
    eprintln!(
        "waits of the two spinners in their cgroup: kernsight {measured:.6} s, /proc/PID/schedstat {kernel:.6} s \
         ({:.6} s before they joined it)",
        before_joining as f64 / 1e9
    );
    // Each waited while the other ran: together about 400 ms.
    assert!(kernel > 0.2, "the kernel's account of the spinners' waits: {kernel} s");
    // Both sum the same waits, between the same scheduler events. What the two can still differ
    // by: a wait between a child's joining and its reading of its schedstat (a tick at most).
    assert!(
        (measured - kernel).abs() <= kernel * 0.02 + 0.005,
        "kernsight counted {measured:.6} s of waiting, the kernel {kernel:.6} s"
    );
}

/// This task's run-queue wait so far (`/proc/self/schedstat`'s second field, ns), read with
/// async-signal-safe calls only: it runs in a child forked from the multi-threaded test.
/// `u64::MAX` when it cannot be read.
fn own_run_delay() -> u64 {
    let mut text = [0u8; 128];
    // SAFETY: open/read/close into a local buffer.
    let read = unsafe {
        let fd = libc::open(c"/proc/self/schedstat".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return u64::MAX;
        }
        let read = libc::read(fd, text.as_mut_ptr().cast(), text.len());
        libc::close(fd);
        read
    };
    let Ok(len) = usize::try_from(read) else { return u64::MAX };
    // "<on-cpu ns> <run_delay ns> <timeslices>\n"
    let mut fields = text[..len].split(|&b| b == b' ');
    match fields.nth(1) {
        Some(digits) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'))
        }
        _ => u64::MAX,
    }
}

/// Forks, execs `path` in the child, waits; the exit status (or -1).
fn fork_exec(path: &std::ffi::CStr) -> i32 {
    let argv = [path.as_ptr(), std::ptr::null()];
    let pid = fork_child(|| {
        unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        127
    });
    wait(pid)
}

#[test]
fn execs_and_exits_are_counted_exactly_by_reason() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // Debug level: each exec and exit event is a log line.
    let agent = Agent::start(&["--log-level", "kernsight=debug"]);
    let cgroup = TestCgroup::create("procs");
    let code = cgroup.run(|| {
        for _ in 0..3 {
            if fork_exec(c"/bin/true") != 0 {
                return 2;
            }
        }
        for _ in 0..2 {
            let status = fork_exec(c"/bin/false");
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 1 {
                return 3;
            }
        }
        for signal in [libc::SIGKILL, libc::SIGTERM] {
            let pid = fork_child(|| {
                loop {
                    unsafe { libc::pause() };
                }
            });
            if pid <= 0 {
                return 4;
            }
            unsafe { libc::kill(pid, signal) };
            let status = wait(pid);
            if !libc::WIFSIGNALED(status) || libc::WTERMSIG(status) != signal {
                return 5;
            }
        }
        0
    });
    assert_eq!(code, 0, "the workload failed");

    // Exits are counted by the kernel as they happen; the scrape reads them.
    let samples = agent.scrape_until(Duration::from_secs(5), |samples| {
        let exits = value(samples, "kernsight_process_exits_total", &[("cgroup", &cgroup.label)]);
        if exits >= 8.0 { Ok(()) } else { Err(format!("{exits} of 8 exits counted")) }
    });
    let execs = value(&samples, "kernsight_process_execs_total", &[("cgroup", &cgroup.label)]);
    let exits = |reason: &str| {
        value(&samples, "kernsight_process_exits_total", &[("cgroup", &cgroup.label), ("reason", reason)])
    };
    // Nothing else execs in the test's cgroup: the forked children only exec what we asked.
    assert_eq!(execs, 5.0, "3 × /bin/true + 2 × /bin/false");
    assert_eq!(exits("exited"), 4.0, "3 × /bin/true and the workload itself");
    assert_eq!(exits("failed"), 2.0, "2 × /bin/false");
    assert_eq!(exits("killed"), 1.0, "SIGKILL");
    assert_eq!(exits("signaled"), 1.0, "SIGTERM");
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "processes")]), 1.0);

    // The events: every exec with its path and arguments, every exit with how it ended, in order.
    let ours = format!("cgroup={} ", cgroup.label);
    let events = || -> Vec<String> {
        agent
            .log()
            .lines()
            .filter(|l| l.contains(&ours) && (l.contains(" exec ") || l.contains(" exit ")))
            .map(str::to_owned)
            .collect()
    };
    let events = eventually(Duration::from_secs(5), || {
        let events = events();
        let exits = events.iter().filter(|l| l.contains(" exit ")).count();
        if exits >= 8 { Ok(events) } else { Err(format!("{exits} of 8 exits logged: {events:#?}")) }
    });
    let execs: Vec<&String> = events.iter().filter(|l| l.contains(" exec ")).collect();
    let paths: Vec<&str> =
        execs.iter().filter_map(|l| l.split("filename=").nth(1)?.split(' ').next()).collect();
    assert_eq!(paths, ["/bin/true", "/bin/true", "/bin/true", "/bin/false", "/bin/false"], "{events:#?}");
    let args: Vec<&str> = execs.iter().filter_map(|l| l.split("args=").nth(1)).collect();
    assert_eq!(args, ["[\"/bin/true\"]"; 3].into_iter().chain(["[\"/bin/false\"]"; 2]).collect::<Vec<_>>());
    assert!(execs.iter().all(|l| l.contains("uid=0") && l.contains("ppid=")), "{execs:#?}");
    let how = |what: &str| events.iter().filter(|l| l.contains(" exit ") && l.contains(what)).count();
    assert_eq!(how("how=exited with status 0"), 4, "{events:#?}");
    assert_eq!(how("how=exited with status 1"), 2, "{events:#?}");
    assert_eq!(how("how=killed by SIGKILL"), 1, "{events:#?}");
    assert_eq!(how("how=killed by signal 15"), 1, "{events:#?}");
}

extern "C" fn thread_returns(_: *mut libc::c_void) -> *mut libc::c_void {
    std::ptr::null_mut()
}

#[test]
fn thread_exits_are_not_process_exits() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("threads");
    // A process whose three threads exit before it exits with status 7: one failed exit.
    let code = cgroup.run(|| {
        let pid = fork_child(|| {
            for _ in 0..3 {
                // SAFETY: `pthread_t` is an integer with glibc and a pointer with musl; all
                // zeroes is a valid value of both, and pthread_create overwrites it.
                let mut thread: libc::pthread_t = unsafe { std::mem::zeroed() };
                // SAFETY: the thread function makes no call at all.
                unsafe {
                    if libc::pthread_create(
                        &mut thread,
                        std::ptr::null(),
                        thread_returns,
                        std::ptr::null_mut(),
                    ) != 0
                        || libc::pthread_join(thread, std::ptr::null_mut()) != 0
                    {
                        return 1;
                    }
                }
            }
            7
        });
        let status = wait(pid);
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7 { 0 } else { 1 }
    });
    assert_eq!(code, 0);
    let samples = parse(&agent.scrape());
    let exits = |reason: &str| {
        value(&samples, "kernsight_process_exits_total", &[("cgroup", &cgroup.label), ("reason", reason)])
    };
    assert_eq!(exits("failed"), 1.0, "the process that exited with 7");
    assert_eq!(exits("exited"), 1.0, "the workload itself; its threads' exits are not counted");
    assert_eq!(value(&samples, "kernsight_process_execs_total", &[("cgroup", &cgroup.label)]), 0.0);
}
