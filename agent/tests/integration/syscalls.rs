//! Per-cgroup syscall accounting, end to end: real programs on this kernel, syscalls made by
//! the test in cgroups it created, counts read back over HTTP.

use std::{process::Command, time::Duration};

use crate::support::{
    self, Agent, TestCgroup, config_file, eventually, failing_openat_times, getpid_times, getppid_times,
    parse, path_str, privileged, program_loaded, programs_unloaded, spawn_in, value, wait_status,
};

const GETPPIDS: usize = 20_000;
const FAILED_OPENS: usize = 500;

#[test]
fn counts_syscalls_and_errnos_per_cgroup_and_not_in_the_sibling() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let busy = TestCgroup::create("busy");
    let sibling = TestCgroup::create("sibling");
    busy.run(|| {
        getppid_times(GETPPIDS);
        failing_openat_times(FAILED_OPENS);
        0
    });
    sibling.run(|| {
        getpid_times(3_000);
        0
    });

    let samples = parse(&agent.scrape());
    let calls = |cgroup: &str, syscall: &str| {
        value(&samples, "kernsight_syscalls_total", &[("cgroup", cgroup), ("syscall", syscall)])
    };
    let errors = |cgroup: &str, syscall: &str, errno: &str| {
        value(
            &samples,
            "kernsight_syscall_errors_total",
            &[("cgroup", cgroup), ("syscall", syscall), ("errno", errno)],
        )
    };
    // Nothing else runs in the test's own cgroups: the counts are exact.
    assert_eq!(calls(&busy.label, "getppid"), GETPPIDS as f64, "getppid in {}", busy.label);
    assert_eq!(errors(&busy.label, "openat", "ENOENT"), FAILED_OPENS as f64);
    assert!(calls(&busy.label, "openat") >= FAILED_OPENS as f64);
    assert_eq!(errors(&busy.label, "getppid", "ENOENT"), 0.0, "getppid never fails");

    assert!(calls(&sibling.label, "getpid") >= 3_000.0, "the sibling's own calls are counted");
    assert_eq!(calls(&sibling.label, "getppid"), 0.0, "the sibling got none of the busy cgroup's calls");
    assert_eq!(errors(&sibling.label, "openat", "ENOENT"), 0.0);
    // The wakeup programs run only where a wait can begin throttled at a wakeup: not where the
    // kernel throttles per task (6.18+) and the scheduler keeps each wait's start.
    let wakeups =
        if support::kernel_at_least(6, 18) && support::scheduler_keeps_wait_account() { 0.0 } else { 2.0 };
    assert_eq!(
        value(&samples, "kernsight_bpf_programs_attached", &[]),
        29.0 + wakeups,
        "sys_exit, its cache's epoch (fork, cgroup attach and transfer), cgroup mkdir and rmdir, oom mark_victim (tp_btf and tracepoint), sched switch (and wakeup, wakeup_new before 6.18), process exec and exit, \
         cgroup_skb ingress and egress (traffic and DNS in one), TC ingress and egress, TCP set_state, retransmit, send and receive reset, kfree_skb, cap_capable, reclaim begin and end (direct and memcg), \
         block_rq issue and complete, escape cgroup mkdir and exec"
    );
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "syscalls")]), 1.0);
}

#[test]
fn scrape_passes_promtool_in_both_formats() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&["--syscall-latency", "true"]);
    let cgroup = TestCgroup::create("promtool");
    cgroup.run(|| {
        failing_openat_times(10);
        0
    });
    let text = agent.scrape();
    let check = |body: &str| {
        let (_dir, file) = config_file(body);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("promtool check metrics < {}", path_str(&file)))
            .output()
            .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&text);
    assert!(text.contains("kernsight_syscall_duration_seconds_bucket"));

    // docs/metrics.md lists every family the agent exports.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
        assert!(docs.contains(&format!("`{family}`")), "{family} is exported but not in docs/metrics.md");
    }

    let (status, openmetrics) = agent.get("/metrics", "application/openmetrics-text;version=1.0.0");
    assert_eq!(status, 200);
    assert!(openmetrics.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    assert!(openmetrics.contains("# TYPE kernsight_syscalls counter"));
    assert_eq!(agent.get("/healthz", "*/*").0, 200);
    assert_eq!(agent.get("/readyz", "*/*"), (200, "ready\n".to_owned()));
}

#[test]
fn latency_histogram_measures_sleeps_in_the_kernel() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&["--syscall-latency", "true"]);
    twenty_sleeps_of_2_ms_are_in_the_histogram(&agent, "latency");
}

/// Makes 20 `nanosleep`s of 2 ms in a new cgroup and checks the agent's histogram of them
/// (shared with the fallback object's test, whose entry times are kept elsewhere).
pub(crate) fn twenty_sleeps_of_2_ms_are_in_the_histogram(agent: &Agent, cgroup_name: &str) {
    let cgroup = TestCgroup::create(cgroup_name);
    cgroup.run(support::sleep_2ms_20_times);
    let samples = parse(&agent.scrape());
    let labels = [("cgroup", cgroup.label.as_str()), ("syscall", "nanosleep")];
    let count = value(&samples, "kernsight_syscall_duration_seconds_count", &labels);
    let sum = value(&samples, "kernsight_syscall_duration_seconds_sum", &labels);
    let bucket = |le: &str| {
        let mut labels = labels.to_vec();
        labels.push(("le", le));
        value(&samples, "kernsight_syscall_duration_seconds_bucket", &labels)
    };
    assert_eq!(count, 20.0);
    assert!((0.040..1.0).contains(&sum), "20 sleeps of 2 ms took {sum} s in total");
    assert_eq!(bucket("0.001048576"), 0.0, "no 2 ms sleep is shorter than 1 ms");
    assert_eq!(bucket("+Inf"), 20.0);
}

#[test]
fn full_slot_table_counts_into_other_and_says_so() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // One slot: the host's own processes take it, so the test's cgroups overflow.
    let (_dir, config) = config_file("[syscalls]\nmax_cgroups = 1\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    agent.scrape_until(Duration::from_secs(10), |samples| {
        let taken = value(samples, "kernsight_bpf_map_entries", &[("map", "SYSCALL_ROWS")]);
        if taken >= 1.0 { Ok(()) } else { Err("the host's processes have not taken the slot".into()) }
    });
    let cgroups: Vec<TestCgroup> = (0..3).map(|i| TestCgroup::create(&format!("full{i}"))).collect();
    for cgroup in &cgroups {
        cgroup.run(|| {
            getppid_times(GETPPIDS);
            0
        });
    }
    let samples = parse(&agent.scrape());
    let attributed: f64 = cgroups
        .iter()
        .map(|c| value(&samples, "kernsight_syscalls_total", &[("cgroup", &c.label), ("syscall", "getppid")]))
        .sum();
    let other = value(&samples, "kernsight_syscalls_total", &[("cgroup", "other"), ("syscall", "getppid")]);
    assert!(
        attributed + other >= 3.0 * GETPPIDS as f64,
        "no call is lost: {attributed} attributed + {other} in other"
    );
    assert!(other >= 2.0 * GETPPIDS as f64, "at most one cgroup got the slot; other = {other}");
    assert!(value(&samples, "kernsight_bpf_map_full_total", &[("map", "cgroup_slots")]) > 0.0);
    assert_eq!(value(&samples, "kernsight_bpf_map_max_entries", &[("map", "SYSCALL_ROWS")]), 1.0);
}

#[test]
fn churn_reuses_slots_and_forgets_removed_cgroups() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // 320 cgroups with a process each, in batches, through 64 slots: only reuse makes room.
    const SLOTS: usize = 64;
    const CGROUPS: usize = 320;
    // block_io off: a request completes after the process that issued it, so it can name a
    // cgroup the test has removed and the agent already forgot (after 1 s here), which the agent
    // then names by a walk; this test counts the walks of the syscall family's index alone.
    let (_dir, config) = config_file(&format!(
        "[syscalls]\nmax_cgroups = {SLOTS}\nforget_after_seconds = 1\n[block_io]\nenabled = false\n"
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let gauge =
        |samples: &[support::Sample], name: &str, labels: &[(&str, &str)]| value(samples, name, labels);
    // Let the host's own busy cgroups take their slots first: the baseline is an agent that has
    // run for a while (a warm-up period, not a wait for an event).
    std::thread::sleep(Duration::from_secs(2));
    let start = parse(&agent.scrape());
    let index_at_start = gauge(&start, "kernsight_cgroup_index_entries", &[]);
    let slots_at_start = gauge(&start, "kernsight_bpf_map_entries", &[("map", "SYSCALL_ROWS")]);
    // Batches of half the slots the host leaves free, so that busy host cgroups that come during
    // the test still find room; more cgroups in all than slots, so only reuse makes room.
    let batch = ((SLOTS - slots_at_start as usize) / 2).clamp(8, 40);
    let rounds = CGROUPS.div_ceil(batch);

    for round in 0..rounds {
        let batch: Vec<TestCgroup> =
            (0..batch).map(|i| TestCgroup::create(&format!("churn{round}-{i}"))).collect();
        for cgroup in &batch {
            cgroup.run(|| {
                getppid_times(1_000);
                0
            });
        }
        let samples = parse(&agent.scrape());
        for cgroup in &batch {
            let calls = value(
                &samples,
                "kernsight_syscalls_total",
                &[("cgroup", &cgroup.label), ("syscall", "getppid")],
            );
            let elsewhere: Vec<String> = samples
                .iter()
                .filter(|s| {
                    s.name == "kernsight_syscalls_total"
                        && s.labels.get("syscall").is_some_and(|c| c == "getppid")
                })
                .filter(|s| !s.labels.get("cgroup").is_some_and(|c| c.starts_with("/kernsight-test")))
                .map(|s| format!("{:?} {}", s.labels, s.value))
                .collect();
            assert_eq!(
                calls,
                1_000.0,
                "round {round}: {} counted exactly, in its own slot; getppid elsewhere: {elsewhere:#?}; slots full: {}",
                cgroup.label,
                value(&samples, "kernsight_bpf_map_full_total", &[("map", "cgroup_slots")])
            );
        }
        let labels: Vec<String> = batch.iter().map(|c| c.label.clone()).collect();
        drop(batch);
        // Grace (1 s) plus a maintenance pass (every second); on a loaded machine a pass can be
        // late, so wait for it (10 s at most) rather than for a fixed time.
        let removed_at = std::time::Instant::now();
        eventually(Duration::from_secs(10), || {
            let text = agent.scrape();
            let left: Vec<&String> =
                labels.iter().filter(|label| text.contains(&format!("cgroup=\"{label}\""))).collect();
            match left.first() {
                None => Ok(()),
                Some(example) => Err(format!(
                    "round {round}: {} removed cgroups still exported, e.g. {example}",
                    left.len()
                )),
            }
        });
        assert!(removed_at.elapsed() >= Duration::from_secs(1), "exported for the grace period first");
    }
    let end = parse(&agent.scrape());
    let storage = gauge(&end, "kernsight_bpf_map_full_total", &[("map", "cgroup_storage")]);
    assert_eq!(
        gauge(&end, "kernsight_bpf_map_full_total", &[("map", "cgroup_slots")]),
        0.0,
        "a cgroup found no free slot ({storage} storage failures)"
    );
    // Back where it started, give or take the host's own short-lived cgroups. Tests that do not
    // take the serial lock, and the host, may hold a few cgroups at the moment of one scrape
    // (once: 8 more in the index); theirs go within seconds, a leak of this test's would stay.
    eventually(Duration::from_secs(30), || {
        let now = parse(&agent.scrape());
        let index_at_end = gauge(&now, "kernsight_cgroup_index_entries", &[]);
        let slots_at_end = gauge(&now, "kernsight_bpf_map_entries", &[("map", "SYSCALL_ROWS")]);
        if index_at_end <= index_at_start + 5.0 && slots_at_end <= slots_at_start + 5.0 {
            Ok(())
        } else {
            Err(format!(
                "index: {index_at_start} entries at start, {index_at_end} at end; \
                 slots: {slots_at_start} in use at start, {slots_at_end} at end"
            ))
        }
    });
    assert!(gauge(&end, "kernsight_cgroup_events_total", &[("event", "created")]) >= (batch * rounds) as f64);
    assert!(gauge(&end, "kernsight_cgroup_events_total", &[("event", "removed")]) >= (batch * rounds) as f64);
    assert_eq!(
        gauge(&end, "kernsight_cgroup_walks_total", &[]),
        1.0,
        "the index followed events, no walk; {} walk requests, {} events lost, {} ids no handle named",
        gauge(&end, "kernsight_cgroup_walk_requests_total", &[]),
        gauge(&end, "kernsight_cgroup_events_lost_total", &[]),
        gauge(&end, "kernsight_cgroup_handle_lookups_total", &[("result", "unknown")]),
    );
}

#[test]
fn sigterm_detaches_every_program() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&["--syscall-latency", "true"]);
    let log = agent.log();
    let ids = support::logged_program_ids(&log, "syscalls");
    // The exit and the entry, and on x86_64 the three that end the exit cache's epoch.
    let expected = if cfg!(target_arch = "x86_64") { 5 } else { 2 };
    assert_eq!(ids.len(), expected, "{expected} program ids of the syscall family in the log:\n{log}");
    assert!(ids.iter().all(|&id| program_loaded(id)), "programs {ids:?} are loaded while the agent runs");

    let status = agent.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    // The kernel frees a detached program after an RCU grace period: give it a moment.
    programs_unloaded(&ids);
}

#[test]
fn tasks_of_the_v2_root_are_attributed_by_their_v1_cgroup() {
    if !privileged() {
        return;
    }
    let Some(memory) = support::v1_root("memory") else {
        support::skip("no v1 memory hierarchy (pure v2 host)");
        return;
    };
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    // Only in a v1 cgroup: the workload stays in the v2 root, as on a hybrid host.
    let legacy = TestCgroup::create_in(&memory, "v1");
    legacy.run(|| {
        getppid_times(GETPPIDS);
        failing_openat_times(FAILED_OPENS);
        0
    });
    let samples = parse(&agent.scrape());
    let labels = [("cgroup", legacy.label.as_str()), ("syscall", "getppid")];
    assert_eq!(value(&samples, "kernsight_syscalls_total", &labels), GETPPIDS as f64);
    let errors = [("cgroup", legacy.label.as_str()), ("syscall", "openat"), ("errno", "ENOENT")];
    assert_eq!(value(&samples, "kernsight_syscall_errors_total", &errors), FAILED_OPENS as f64);
}

/// `SYS_kcmp` with a seccomp filter that fails it with the errno passed as its first argument
/// (the kernel clamps it to `MAX_ERRNO`, 4095): a workload choosing its errnos.
const CHOSEN_ERRNO_SYSCALL: libc::c_long = libc::SYS_kcmp;

/// Installs that filter in the calling (forked) process; false when seccomp refuses it.
fn fail_with_chosen_errnos() -> bool {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const OR_K: u16 = 0x44;
    const RET_A: u16 = 0x16;
    const RET_K: u16 = 0x06;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(JEQ_K, 0, 3, CHOSEN_ERRNO_SYSCALL as u32),
        insn(LD_W_ABS, 0, 0, 16), // low half of args[0]
        insn(OR_K, 0, 0, libc::SECCOMP_RET_ERRNO),
        insn(RET_A, 0, 0, 0),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: prctl with a filter that outlives the call; the child is single-threaded.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const program) == 0
    }
}

const UNKNOWN_SYSCALLS: i64 = 20_000;
const CHOSEN_ERRNOS: i64 = 4_095;
/// Exit code of a flood whose seccomp filter was refused.
const NO_SECCOMP: i32 = 3;

/// The attack of issue 16: 20,000 calls of numbers past the syscall table (`syscall(1000 + i)`,
/// ENOSYS) and one failure with each errno 1..=4095 chosen through seccomp `RET_ERRNO`, from a
/// cgroup of the test's; then a sibling cgroup's ENOENT failures. The flooding cgroup holds at
/// most its quota of error entries, every failure is still counted under it, and the sibling's
/// errors stay its own, with their syscall and errno. Latency on: its map is keyed the same way.
#[test]
fn an_error_flood_stays_within_its_cgroups_quota_and_spares_the_sibling() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&["--syscall-latency", "true"]);
    let before = parse(&agent.scrape());
    let flood = TestCgroup::create("flood");
    let sibling = TestCgroup::create("flood-sibling");
    let started = std::time::Instant::now();
    let code = flood.run(|| {
        for i in 0..UNKNOWN_SYSCALLS {
            // SAFETY: no such syscall: it fails with ENOSYS.
            unsafe { libc::syscall(1000 + i) };
        }
        if !fail_with_chosen_errnos() {
            return NO_SECCOMP;
        }
        for errno in 1..=CHOSEN_ERRNOS {
            // SAFETY: the filter fails the call before the kernel runs it.
            unsafe { libc::syscall(CHOSEN_ERRNO_SYSCALL, errno, 0, 0, 0, 0) };
        }
        0
    });
    assert_eq!(code, 0, "the flood's seccomp filter was refused");
    let flood_took = started.elapsed();
    sibling.run(|| {
        failing_openat_times(FAILED_OPENS);
        0
    });

    let samples = parse(&agent.scrape());
    let quota = kernsight_common::syscalls::error_quota(
        kernsight_common::syscalls::DEFAULT_ERROR_ENTRIES,
        kernsight_common::syscalls::DEFAULT_CGROUP_SLOTS,
    );
    let series_of = |name: &str, cgroup: &str| -> Vec<&support::Sample> {
        samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("cgroup").is_some_and(|c| c == cgroup))
            .collect()
    };
    let flood_errors = series_of("kernsight_syscall_errors_total", &flood.label);
    let counted: f64 = flood_errors.iter().map(|s| s.value).sum();
    let entries = |samples: &[support::Sample]| {
        value(samples, "kernsight_bpf_map_entries", &[("map", "SYSCALL_ERRORS")])
    };
    eprintln!(
        "flood of {} failing calls in {flood_took:?}: {} error series for the flooding cgroup (quota {quota}), \
         SYSCALL_ERRORS {} -> {} entries, {} quota hits",
        UNKNOWN_SYSCALLS + CHOSEN_ERRNOS,
        flood_errors.len(),
        entries(&before),
        entries(&samples),
        value(&samples, "kernsight_bpf_map_full_total", &[("map", "syscall_errors_quota")]),
    );
    assert!(
        flood_errors.len() <= quota as usize,
        "{} error series for one cgroup, quota {quota}: {:#?}",
        flood_errors.len(),
        flood_errors.iter().map(|s| &s.labels).collect::<Vec<_>>()
    );
    // The host makes errors meanwhile, in cgroups that have their own quotas; the flood adds at
    // most its own.
    assert!(
        entries(&samples) - entries(&before) <= f64::from(quota) + 200.0,
        "SYSCALL_ERRORS grew from {} to {} entries",
        entries(&before),
        entries(&samples)
    );
    assert_eq!(value(&samples, "kernsight_bpf_map_full_total", &[("map", "SYSCALL_ERRORS")]), 0.0);
    assert!(value(&samples, "kernsight_bpf_map_full_total", &[("map", "syscall_errors_quota")]) > 0.0);
    // Nothing lost: every failure of the flood counted under its cgroup, the ones past the quota
    // under its own syscall="other", errno="other".
    let made = (UNKNOWN_SYSCALLS + CHOSEN_ERRNOS) as f64;
    assert!(counted >= made, "{counted} failures counted for the flooding cgroup, {made} made");
    let errors = |cgroup: &str, syscall: &str, errno: &str| {
        value(
            &samples,
            "kernsight_syscall_errors_total",
            &[("cgroup", cgroup), ("syscall", syscall), ("errno", errno)],
        )
    };
    assert_eq!(
        errors(&flood.label, "other", "ENOSYS"),
        UNKNOWN_SYSCALLS as f64,
        "numbers past the table share one column"
    );
    assert!(errors(&flood.label, "other", "other") > 0.0, "the failures past the quota");
    assert_eq!(errors(&sibling.label, "openat", "ENOENT"), FAILED_OPENS as f64, "the sibling's own errors");
    assert_eq!(errors("other", "openat", "ENOENT"), 0.0, "none of the sibling's errors went to other");
    // Latency: one series per (cgroup, syscall column), numbers past the table in one.
    let flood_latency: Vec<&String> = series_of("kernsight_syscall_duration_seconds_count", &flood.label)
        .iter()
        .filter_map(|s| s.labels.get("syscall"))
        .collect();
    assert!(flood_latency.len() <= 10, "the flood's latency series: {flood_latency:?}");
    assert_eq!(
        value(
            &samples,
            "kernsight_syscall_duration_seconds_count",
            &[("cgroup", &sibling.label), ("syscall", "openat")]
        ),
        FAILED_OPENS as f64
    );
    assert_eq!(value(&samples, "kernsight_bpf_map_full_total", &[("map", "SYSCALL_LATENCY")]), 0.0);
    // Runs the kernel skipped are exported per program where it counts them (5.12+).
    if kernel_counts_recursion_misses() {
        let programs: Vec<&String> = samples
            .iter()
            .filter(|s| s.name == "kernsight_bpf_program_recursion_misses_total")
            .filter_map(|s| s.labels.get("program"))
            .collect();
        for program in ["ks_sys_exit", "ks_sys_enter"] {
            assert!(programs.iter().any(|p| *p == program), "no recursion misses of {program}: {programs:?}");
        }
    }
}

/// Whether this kernel's `bpf_prog_info` has `recursion_misses` (5.12+).
fn kernel_counts_recursion_misses() -> bool {
    crate::support::kernel_at_least(5, 12)
}

/// Error entries of a cgroup that never held a slot (an agent of another version, or a slot
/// table replaced while the pinned hash was kept, left them) go once the cgroup has been gone
/// for `forget_after_seconds`; those of a live cgroup stay.
#[test]
fn error_entries_of_removed_cgroups_without_a_slot_are_forgotten() {
    use std::os::unix::fs::MetadataExt as _;

    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
    use kernsight_common::{MAP_LAYOUT_VERSION, syscalls::SyscallKey};

    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file("[syscalls]\nforget_after_seconds = 1\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let gone = TestCgroup::create("slotless-gone");
    let kept = TestCgroup::create("slotless-kept");
    let id_of = |cgroup: &TestCgroup| std::fs::metadata(&cgroup.path).expect("stat the cgroup").ino();
    let (gone_id, kept_id) = (id_of(&gone), id_of(&kept));
    drop(gone);

    let pins = agent.pin_dir().expect("the agent pins its maps");
    let path = pins.join(format!("v{MAP_LAYOUT_VERSION}/SYSCALL_ERRORS"));
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut errors: PerCpuHashMap<MapData, SyscallKey, u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("SYSCALL_ERRORS is a per-CPU hash");
    let cpus = aya::util::nr_cpus().expect("count CPUs");
    let key = |cgroup_id| SyscallKey { cgroup_id, syscall: libc::SYS_openat as u32, errno: 2 };
    for id in [gone_id, kept_id] {
        let ones = PerCpuValues::try_from(vec![1u64; cpus.get() as usize]).expect("per-CPU values");
        errors.insert(&key(id), ones, 0).expect("insert an entry");
    }
    let inserted = std::time::Instant::now();
    eventually(Duration::from_secs(10), || match errors.get(&key(gone_id), 0) {
        Err(_) => Ok(()),
        Ok(_) => Err(format!("the entry of removed cgroup {gone_id} is still in SYSCALL_ERRORS")),
    });
    eprintln!("the removed cgroup's entry went after {:?}", inserted.elapsed());
    assert!(errors.get(&key(kept_id), 0).is_ok(), "the live cgroup's entry stays");
}

#[test]
fn transient_scopes_are_counted_under_their_parent_and_make_no_series_of_their_own() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // A slice of the test's own, with scopes in it as systemd makes them for sessions and
    // systemd-run, and one service; the agent is told to treat the scopes as it treats
    // /system.slice/*.scope and /user.slice/*.scope by default.
    let slice = TestCgroup::create("scopes");
    let (_dir, config) =
        config_file(&format!("[metadata]\nhost_scope_exclude = [\"{}/*.scope\"]\n", slice.label));
    let agent = Agent::start(&["--config", path_str(&config)]);
    const PER_SCOPE: usize = 3_000;
    let scopes: Vec<String> = (0..5).map(|i| format!("run-r{i}.scope")).collect();
    for name in scopes.iter().chain([&"kept.service".to_owned()]) {
        let path = slice.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let pid = spawn_in(&path, || {
            getppid_times(PER_SCOPE);
            0
        });
        assert_eq!(wait_status(pid), 0, "the workload in {} exits with status 0", path.display());
    }
    let aggregate = format!("{}/*.scope", slice.label);
    let kept = format!("{}/kept.service", slice.label);
    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let summed =
            value(samples, "kernsight_syscalls_total", &[("cgroup", &aggregate), ("syscall", "getppid")]);
        let own = value(samples, "kernsight_syscalls_total", &[("cgroup", &kept), ("syscall", "getppid")]);
        if summed >= (5 * PER_SCOPE) as f64 && own >= PER_SCOPE as f64 {
            Ok(())
        } else {
            Err(format!("getppid under {aggregate}: {summed}, under {kept}: {own}"))
        }
    });
    // Every call is there, in one series; no scope has a series of its own.
    let of_the_slice: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "kernsight_syscalls_total")
        .filter_map(|s| s.labels.get("cgroup").map(String::as_str))
        .filter(|cgroup| cgroup.starts_with(&format!("{}/", slice.label)))
        .collect();
    assert_eq!(of_the_slice, [aggregate.as_str(), kept.as_str()].into(), "series of the slice");
    let summed =
        value(&samples, "kernsight_syscalls_total", &[("cgroup", &aggregate), ("syscall", "getppid")]);
    assert!(summed < (5 * PER_SCOPE + 1_000) as f64, "only the scopes' calls: {summed}");
}
