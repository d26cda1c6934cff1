//! CPU waits by cause, end to end: a busy loop under a 10 % CPU quota waits because its cgroup
//! is throttled, two busy loops sharing one CPU without a quota wait for each other; the agent's
//! `kernsight_cpu_wait_seconds{reason}` must say which, and the throttled total must agree with
//! the kernel's own `cpu.stat` throttled time, as must the throttle episodes
//! (`kernsight_cpu_throttle_episode_seconds`, 6.6+). Works on this host's hybrid layout (the quota on
//! the v1 cpu controller, the workload also in a v2 cgroup that names it) and on pure v2 guests
//! (`cpu.max` on the v2 cgroup).

use std::path::{Path, PathBuf};

use crate::{
    sched::{pin_to, spin, two_spinners_on},
    support::{
        self, Agent, SwitchWatch, TestCgroup, config_file, parse, path_str, privileged, v1_root, value,
    },
};

const QUOTA_US: u64 = 10_000;
const PERIOD_US: u64 = 100_000;

/// Where the quota of a test cgroup is set and its throttled time read: the v1 cpu cgroup on a
/// host where cpu is a v1 controller, else the v2 cgroup itself.
enum QuotaCgroup {
    V1(TestCgroup),
    V2(PathBuf),
}

impl QuotaCgroup {
    /// Gives `v2` (the cgroup the agent names the workload by) a quota of 10 % of one CPU.
    /// `None` (with the reason) when no cpu controller is available to the test.
    fn limit(v2: &TestCgroup, tag: &str) -> Result<Self, String> {
        if let Some(root) = v1_root("cpu") {
            let cpu = TestCgroup::create_in(&root, tag);
            std::fs::write(cpu.path.join("cpu.cfs_period_us"), PERIOD_US.to_string()).unwrap();
            std::fs::write(cpu.path.join("cpu.cfs_quota_us"), QUOTA_US.to_string()).unwrap();
            return Ok(Self::V1(cpu));
        }
        let max = v2.path.join("cpu.max");
        if !max.exists() {
            return Err(format!(
                "no v1 cpu controller and {} does not exist (cpu not delegated)",
                max.display()
            ));
        }
        std::fs::write(&max, format!("{QUOTA_US} {PERIOD_US}")).unwrap();
        Ok(Self::V2(v2.path.clone()))
    }

    /// The `cgroup.procs` a workload must also join (v1), if any.
    fn extra_procs(&self) -> Option<PathBuf> {
        match self {
            Self::V1(cpu) => Some(cpu.path.join("cgroup.procs")),
            Self::V2(_) => None,
        }
    }

    /// The kernel's (throttled time in seconds, throttled periods) of this cgroup: v1
    /// `throttled_time` (ns), v2 `throttled_usec`, and `nr_throttled`.
    fn throttled(&self) -> (f64, f64) {
        let (dir, key, per_second): (&Path, _, _) = match self {
            Self::V1(cpu) => (&cpu.path, "throttled_time", 1e9),
            Self::V2(dir) => (dir, "throttled_usec", 1e6),
        };
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
        let read = |key: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {key} in {}: {stat}", dir.display())) as f64
        };
        (read(key) / per_second, read("nr_throttled"))
    }
}

/// Copies the calling thread's `/proc/thread-self/schedstat` to `to` (raw syscalls: safe after
/// fork).
fn save_schedstat(to: &std::ffi::CStr) -> bool {
    let mut buf = [0u8; 128];
    // SAFETY: raw syscalls on a buffer of this frame and a path the test made.
    unsafe {
        let from = libc::open(c"/proc/thread-self/schedstat".as_ptr(), libc::O_RDONLY);
        let n = if from >= 0 { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) } else { -1 };
        if from >= 0 {
            libc::close(from);
        }
        let out = libc::open(to.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o600);
        let ok = n > 0 && out >= 0 && libc::write(out, buf.as_ptr().cast(), n as usize) == n;
        if out >= 0 {
            libc::close(out);
        }
        ok
    }
}

/// The kernel's schedstat of a thread: (run-queue wait in seconds, times it was switched in).
fn parse_schedstat(path: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(path).unwrap();
    let fields: Vec<f64> = text.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields.len(), 3, "schedstat: {text}");
    (fields[1] / 1e9, fields[2])
}

/// What a thread's schedstat grew by between the copies at `start` and `end`.
fn schedstat_between(start: &Path, end: &Path) -> (f64, f64) {
    let ((delay_start, runs_start), (delay_end, runs_end)) = (parse_schedstat(start), parse_schedstat(end));
    (delay_end - delay_start, runs_end - runs_start)
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path_str(path)).unwrap()
}

/// (throttled, contention) wait sums of `cgroup`, in seconds.
fn wait_sums(samples: &[support::Sample], cgroup: &str) -> (f64, f64) {
    let sum =
        |reason| value(samples, "kernsight_cpu_wait_seconds_sum", &[("cgroup", cgroup), ("reason", reason)]);
    (sum("throttled"), sum("contention"))
}

#[test]
fn a_busy_loop_under_its_quota_waits_throttled_as_long_as_cpu_stat_says() {
    busy_loop_under_its_quota("");
}

/// The same with every wait stamped by the wakeup programs rather than read from the
/// scheduler's account.
#[test]
fn a_busy_loop_under_its_quota_waits_throttled_as_long_as_cpu_stat_says_with_stamped_waits() {
    busy_loop_under_its_quota("[sched]\nwait_start = \"wakeup\"\n");
}

/// Runs of the quota workload before the test gives up on a `sched_switch` that reports every
/// switch of the loop (see `support::switch_watch`).
const QUOTA_ATTEMPTS: usize = 4;

/// The name the quota workload's thread takes, which the switch watch records.
const QUOTA_LOOP_COMM: &std::ffi::CStr = c"ks-quota-loop";

/// One busy loop under a 10 % quota for 3 s, with the agent on `config`. Run again, in a new
/// cgroup, when the tracepoint hid a switch of the loop from every tracer: the agent cannot be
/// checked against the kernel's accounts on such a run.
fn busy_loop_under_its_quota(config: &str) {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file(config);
    let agent = Agent::start(&["--config", path_str(&config)]);
    for attempt in 1..=QUOTA_ATTEMPTS {
        let watch = SwitchWatch::start(QUOTA_LOOP_COMM.to_str().unwrap())
            .inspect_err(|why| eprintln!("switches not watched ({why}): every run is checked"))
            .ok();
        // A name of its own each time: the agent keeps a removed cgroup's counts for a while.
        let tag = format!("cpuwait-quota{attempt}");
        let cgroup = TestCgroup::create(&tag);
        let quota = match QuotaCgroup::limit(&cgroup, &tag) {
            Ok(quota) => quota,
            Err(why) => return support::skip(&why),
        };
        let kernel = run_under_quota(&cgroup, &quota);
        let hidden = watch.as_ref().map_or(0, SwitchWatch::hidden_switches);
        if hidden == 0 {
            return check_quota_run(&agent, &cgroup, kernel);
        }
        eprintln!(
            "attempt {attempt}: sched_switch did not report {hidden} switches of the loop; running it again"
        );
    }
    panic!(
        "sched_switch hid switches of the loop in each of {QUOTA_ATTEMPTS} runs: nothing to check against"
    );
}

/// What the kernel counted for one quota run: cpu.stat's (throttled seconds, throttled
/// periods) during it, and the loop thread's schedstat (run delay in seconds, times switched
/// in) while it was in the cgroup.
struct KernelCounts {
    throttled: (f64, f64),
    schedstat: (f64, f64),
}

/// One busy loop on CPU 0 for 3 s of wall time in `cgroup`, under `quota`.
fn run_under_quota(cgroup: &TestCgroup, quota: &QuotaCgroup) -> KernelCounts {
    let (seconds_before, periods_before) = quota.throttled();
    let extra = quota.extra_procs().map(|p| c_path(&p));
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = (dir.path().join("schedstat.start"), dir.path().join("schedstat.end"));
    let (start_c, end_c) = (c_path(&start), c_path(&end));
    // 10 % of the loop's 3 s runs, the rest is throttled.
    let code = cgroup.run(|| {
        // SAFETY: a raw syscall on a constant name.
        if unsafe { libc::prctl(libc::PR_SET_NAME, QUOTA_LOOP_COMM.as_ptr()) } != 0 {
            return 5;
        }
        // In the cgroup from here on: what the thread waited before is not the cgroup's.
        if !save_schedstat(&start_c) {
            return 4;
        }
        if extra.as_deref().is_some_and(|procs| !support::join_procs(procs)) {
            return 2;
        }
        if !pin_to(0) {
            return 3;
        }
        spin(3_000_000_000);
        if !save_schedstat(&end_c) {
            return 4;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed");
    let (seconds_after, periods_after) = quota.throttled();
    KernelCounts {
        throttled: (seconds_after - seconds_before, periods_after - periods_before),
        schedstat: schedstat_between(&start, &end),
    }
}

/// The agent's waits of `cgroup` against what the kernel counted for its quota run.
fn check_quota_run(agent: &Agent, cgroup: &TestCgroup, kernel_counts: KernelCounts) {
    let KernelCounts { throttled: (kernel, periods), schedstat: (run_delay, switched_in) } = kernel_counts;
    let text = agent.scrape();
    let samples = parse(&text);
    let (throttled, contention) = wait_sums(&samples, &cgroup.label);
    let count = |reason| {
        value(&samples, "kernsight_cpu_wait_seconds_count", &[("cgroup", &cgroup.label), ("reason", reason)])
    };
    let (waits, contended) = (count("throttled"), count("contention"));
    // A wait whose start could not be stamped (the kernel gave no task storage: out of memory,
    // or a lookup nested in another on the same CPU) is not counted; the map-full counter of
    // RUNQ_START counts those.
    let unstamped = value(&samples, "kernsight_bpf_map_full_total", &[("map", "RUNQ_START")]);
    eprintln!(
        "quota 10 %: throttled waits {throttled:.3} s in {waits} waits, contention {contention:.3} s in \
         {contended}; cpu.stat throttled {kernel:.3} s in {periods} periods; schedstat: waited \
         {run_delay:.3} s, switched in {switched_in} times; waits not stamped (node-wide) {unstamped}"
    );
    assert!(kernel > 1.5, "3 s at 10 % of a CPU: the kernel throttled the loop {kernel} s");
    assert!(throttled >= 0.9 * (throttled + contention), "throttled waits dominate");
    assert!(
        (throttled - kernel).abs() <= 0.1 * kernel,
        "throttled waits {throttled} s within 10 % of cpu.stat's {kernel} s"
    );
    assert!(periods >= 10.0, "3 s at 10 %: {periods} throttled periods");
    // Every time the kernel switched the thread in ended one wait, throttled or not: none
    // missed, none merged. `nr_throttled` cannot say that: it counts the periods the period
    // timer found the cgroup throttled, and a timer that fires a period late (under software
    // emulation) counts two periods for one throttle. The thread's schedstat is read once it is
    // in the cgroup: before, it waits for its first run and, on a loaded machine, any number
    // of times to join. Counted by the agent and not in the difference: a preemption between
    // the join and the first copy, and the thread's waits while it exits after the second.
    let all = waits + contended;
    assert!(
        switched_in <= all && all <= switched_in + 3.0,
        "{all} waits for {switched_in} switches in of the thread while in the cgroup"
    );
    assert!(
        (run_delay - (throttled + contention)).abs() <= 0.1 * run_delay,
        "waits {throttled} + {contention} s within 10 % of the thread's run delay {run_delay} s"
    );
    assert_episodes_match_cpu_stat(&text, &cgroup.label, (kernel, periods), waits);
}

/// One thread on one CPU: each throttle of its cfs_rq is one episode, measured from the
/// throttle to the unthrottle as `cpu.stat` measures it, and ends one throttled wait.
/// `kernel`: cpu.stat's (throttled seconds, throttled periods).
fn assert_episodes_match_cpu_stat(text: &str, cgroup: &str, kernel: (f64, f64), waits: f64) {
    let (kernel, periods) = kernel;
    let exported = text.contains("kernsight_cpu_throttle_episode_seconds");
    if !support::kernel_at_least(6, 6) {
        // cfs_rq.throttled_clock_self_time is 6.6+: without it the agent must not make one up.
        assert!(!exported, "no throttle episodes on a kernel without throttled_clock_self_time");
        return;
    }
    let samples = parse(text);
    let episode = |suffix: &str| {
        value(&samples, &format!("kernsight_cpu_throttle_episode_seconds_{suffix}"), &[("cgroup", cgroup)])
    };
    let (episodes, seconds) = (episode("count"), episode("sum"));
    let shortest = value(
        &samples,
        "kernsight_cpu_throttle_episode_seconds_bucket",
        &[("cgroup", cgroup), ("le", "0.016777216")],
    );
    eprintln!(
        "throttle episodes: {episodes} lasting {seconds:.3} s ({shortest} under 16.8 ms); cpu.stat {kernel:.3} s"
    );
    assert!(
        (seconds - kernel).abs() <= 0.1 * kernel,
        "episodes last {seconds} s in all, within 10 % of cpu.stat's {kernel} s"
    );
    // Two counts bound the throttles from above, each exact in its own conditions: the
    // throttled waits (more when another task preempts the thread between the throttle and its
    // dequeue on the way to user space, so that one throttle begins two waits), and the
    // throttled periods (more when the period timer fires late and counts its overrun; each
    // unthrottle is a period timer that found the cgroup throttled).
    let throttles = waits.min(periods);
    assert!(
        0.9 * throttles <= episodes && episodes <= throttles,
        "{episodes} episodes for at most {throttles} throttles ({waits} throttled waits, {periods} periods)"
    );
    // 10 ms of quota per 100 ms period: most throttles last the rest of the period (~90 ms).
    assert!(shortest <= 0.5 * episodes, "{shortest} of {episodes} episodes under 16.8 ms");
}

/// A thread that sleeps 5 ms at a time shares a 10 % quota with a busy loop on one CPU: the
/// loop spends the quota early in each period, so the sleeper mostly wakes into a throttled
/// group. From 6.18 it runs its way back to user space and is throttled there, a wait that
/// begins at that switch-out (no wakeup program is attached): its waits are throttled ones.
/// Before 6.18 it stays off the CPU until the unthrottle, a wait that begins at the wakeup
/// (`ks_sched_wakeup` stamps it throttled); but a wakeup while the loop still runs queues it
/// behind the loop, and when the group is throttled then, that whole wait keeps `contention`
/// (the split's known limit before 6.18): a third to a half of its waits were throttled in the
/// matrix's guests, and none would be without the wakeup programs. Either way its waits add up
/// to what its schedstat says it waited.
#[test]
fn a_thread_woken_into_its_throttled_group_waits_throttled() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let spinner = TestCgroup::create("cpuwait-woken");
    let quota = match QuotaCgroup::limit(&spinner, "cpuwait-woken") {
        Ok(quota) => quota,
        Err(why) => return support::skip(&why),
    };
    // Under the quota's cgroup on a pure v2 host, beside it in v2 on a hybrid one (the v1
    // quota cgroup is joined through `extra_procs`): its own series either way.
    let sleeper = spinner.child("sleeper");
    let extra = quota.extra_procs().map(|p| c_path(&p));
    let join_quota = || extra.as_deref().is_none_or(support::join_procs);
    let spinning = support::spawn_in(&spinner.path, || {
        if !join_quota() || !pin_to(0) {
            return 2;
        }
        spin(3_500_000_000);
        0
    });
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = (dir.path().join("schedstat.start"), dir.path().join("schedstat.end"));
    let (start_c, end_c) = (c_path(&start), c_path(&end));
    let code = sleeper.run(|| {
        if !join_quota() || !pin_to(0) {
            return 2;
        }
        let nap = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
        if !save_schedstat(&start_c) {
            return 4;
        }
        for _ in 0..300 {
            // SAFETY: a raw syscall on a timespec of this frame.
            if unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) } != 0 {
                return 3;
            }
        }
        if !save_schedstat(&end_c) { 4 } else { 0 }
    });
    assert_eq!(code, 0, "the sleeper failed (2: join or pin; 3: nanosleep; 4: schedstat)");
    let status = support::wait_status(spinning);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the busy loop failed: {status}");
    let (run_delay, switched_in) = schedstat_between(&start, &end);
    let samples = parse(&agent.scrape());
    let (throttled, contention) = wait_sums(&samples, &sleeper.label);
    eprintln!(
        "sleeper: throttled waits {throttled:.3} s, contention {contention:.3} s; schedstat: waited \
         {run_delay:.3} s, switched in {switched_in} times"
    );
    assert!(run_delay > 0.5, "300 wakeups into a group throttled 90 % of the time: waited {run_delay} s");
    let share = if support::kernel_at_least(6, 18) { 0.8 } else { 0.2 };
    assert!(
        throttled >= share * (throttled + contention),
        "throttled waits at least {share} of all: {throttled:.3} s throttled, {contention:.3} s contention, \
         run delay {run_delay:.3} s"
    );
    assert!(
        (run_delay - (throttled + contention)).abs() <= 0.1 * run_delay,
        "waits {throttled} + {contention} s within 10 % of the thread's run delay {run_delay} s"
    );
}

#[test]
fn two_busy_loops_on_one_cpu_without_a_quota_wait_for_contention_only() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("cpuwait-contended");
    // Two spinners share CPU 0 for a second each: each waits while the other runs.
    let code = cgroup.run(|| two_spinners_on(0, 1_000_000_000));
    assert_eq!(code, 0, "the contended workload failed");

    let samples = parse(&agent.scrape());
    let (throttled, contention) = wait_sums(&samples, &cgroup.label);
    let total = value(&samples, "kernsight_runqueue_latency_seconds_sum", &[("cgroup", &cgroup.label)]);
    eprintln!(
        "no quota: contention waits {contention:.3} s, throttled {throttled:.3} s, run-queue total {total:.3} s"
    );
    assert!(contention > 0.3, "the spinners waited {contention} s for each other");
    assert_eq!(throttled, 0.0, "nothing limits this cgroup: no throttled wait");
    // The run-queue latency is the sum of both reasons.
    assert!((total - (throttled + contention)).abs() < 1e-6, "{total} = {throttled} + {contention}");
}

#[test]
fn without_the_wait_reason_the_plain_latency_stays_and_the_split_is_not_exported() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file("[sched]\nwait_reason = false\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let cgroup = TestCgroup::create("cpuwait-off");
    let code = cgroup.run(|| two_spinners_on(0, 300_000_000));
    assert_eq!(code, 0, "the contended workload failed");
    let text = agent.scrape();
    let samples = parse(&text);
    let total = value(&samples, "kernsight_runqueue_latency_seconds_sum", &[("cgroup", &cgroup.label)]);
    eprintln!("wait_reason = false: run-queue total {total:.3} s");
    assert!(total > 0.1, "the spinners waited {total} s for each other");
    assert!(!text.contains("kernsight_cpu_wait_seconds"), "the split is off");
}
