//! The builds of the kernel programs for older kernels, forced on this kernel with `bpf.object`:
//! `hashed-slots` (what kernels without cgroup local storage load: 5.11 to 6.1) and `fallback`
//! (without task local storage or `bpf_get_current_task_btf` either: 5.10). Each gives the same
//! counts as the full build, names its implementations in `kernsight_probe_info`, and empties its
//! hash of cgroup slots as slots are recycled.

use std::time::{Duration, Instant};

use crate::support::{
    Agent, TestCgroup, config_file, failing_openat_times, getppid_times, parse, path_str, privileged, value,
};

const FAILED_OPENS: usize = 300;
const GETPPIDS: usize = 5_000;

/// A build for older kernels, as `bpf.object` names it.
struct Build {
    object: &'static str,
    /// The run-queue family's implementation in it.
    runqueue: &'static str,
}

const FALLBACK: Build = Build { object: "fallback", runqueue: "thread_id_lru" };
const HASHED_SLOTS: Build = Build { object: "hashed-slots", runqueue: "task_storage" };

/// The build the agent loads when `build` is asked for on this kernel: the hashed-slots build
/// needs task local storage and `bpf_get_current_task_btf` (5.11+), without which the agent
/// loads the fallback one (the kernel matrix's 5.10).
fn loaded_here(build: &'static Build) -> &'static Build {
    if build.object != HASHED_SLOTS.object {
        return build;
    }
    let out = std::process::Command::new(crate::support::BINARY)
        .args(["check", "-o", "json"])
        .output()
        .expect("kernsight check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check's JSON report");
    let features = &report["features"];
    if features["task_storage"] == true && features["current_task_btf"] == true { build } else { &FALLBACK }
}

fn agent_of(build: &Build, extra: &str) -> (tempfile::TempDir, Agent) {
    let (dir, config) = config_file(&format!("[bpf]\nobject = \"{}\"\n{extra}", build.object));
    let agent = Agent::start(&["--config", path_str(&config)]);
    (dir, agent)
}

#[test]
fn fallback_build_counts_syscalls_and_run_queue_waits_per_cgroup() {
    counts_syscalls_and_run_queue_waits_per_cgroup(&FALLBACK);
}

#[test]
fn hashed_slots_build_counts_syscalls_and_run_queue_waits_per_cgroup() {
    counts_syscalls_and_run_queue_waits_per_cgroup(&HASHED_SLOTS);
}

fn counts_syscalls_and_run_queue_waits_per_cgroup(build: &'static Build) {
    if !privileged() {
        return;
    }
    let _serial = crate::support::serial();
    let (_dir, agent) = agent_of(build, "");
    let busy = TestCgroup::create(&format!("{}-busy", build.object));
    let sibling = TestCgroup::create(&format!("{}-sibling", build.object));
    let code = busy.run(|| {
        getppid_times(GETPPIDS);
        failing_openat_times(FAILED_OPENS);
        // Sleeps: each wakeup is a run-queue wait of this cgroup's thread.
        let one_ms = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
        for _ in 0..20 {
            // SAFETY: valid timespec, no remainder wanted.
            unsafe { libc::nanosleep(&one_ms, std::ptr::null_mut()) };
        }
        0
    });
    assert_eq!(code, 0, "the workload failed");
    sibling.run(|| {
        getppid_times(100);
        0
    });

    let text = agent.scrape();
    let samples = parse(&text);
    let info = |probe: &str, implementation: &str| {
        value(&samples, "kernsight_probe_info", &[("probe", probe), ("implementation", implementation)])
    };
    let log = agent.log();
    let loaded = loaded_here(build);
    let object = format!("kernsight-{}", loaded.object);
    assert!(log.contains(&object), "the log names the build loaded, {object}:\n{log}");
    if !std::ptr::eq(loaded, build) {
        assert!(
            log.contains("but the kernel lacks"),
            "the log says why {} could not load:\n{log}",
            build.object
        );
    }
    assert_eq!(info("syscalls", "cgroup_id_hash"), 1.0, "the syscall family keeps its slots by id");
    let runqueue = crate::support::runqueue_implementation(loaded.runqueue);
    assert_eq!(info("runqueue", runqueue), 1.0, "the runqueue family runs {runqueue}");
    for probe in [
        "syscalls",
        "runqueue",
        "processes",
        "oom",
        "cgroups",
        "capabilities",
        "memory_reclaim",
        "block_io",
        "dns",
        "escape",
    ] {
        assert_eq!(
            value(&samples, "kernsight_probe_attached", &[("probe", probe)]),
            1.0,
            "{probe} attaches from the {} build; log:\n{}",
            build.object,
            agent.log()
        );
    }
    let calls = |cgroup: &str, syscall: &str| {
        value(&samples, "kernsight_syscalls_total", &[("cgroup", cgroup), ("syscall", syscall)])
    };
    // Nothing else runs in the test's own cgroups: the counts are exact.
    assert_eq!(calls(&busy.label, "getppid"), GETPPIDS as f64);
    assert_eq!(
        value(
            &samples,
            "kernsight_syscall_errors_total",
            &[("cgroup", &busy.label), ("syscall", "openat"), ("errno", "ENOENT")]
        ),
        FAILED_OPENS as f64
    );
    assert_eq!(calls(&sibling.label, "getppid"), 100.0, "the sibling has its own slot");
    let waits = value(&samples, "kernsight_runqueue_latency_seconds_count", &[("cgroup", &busy.label)]);
    assert!(waits >= 20.0, "20 wakeups from sleep in {}, {waits} run-queue waits counted", busy.label);
}

#[test]
fn fallback_build_measures_syscall_latency() {
    if !privileged() {
        return;
    }
    let _serial = crate::support::serial();
    // Entry times in an LRU hash by thread id, where the other builds keep them in the task.
    let (_dir, agent) = agent_of(&FALLBACK, "[syscalls]\nlatency_histogram = true\n");
    crate::syscalls::twenty_sleeps_of_2_ms_are_in_the_histogram(&agent, "fallback-latency");
    let samples = parse(&agent.scrape());
    let threads = value(&samples, "kernsight_bpf_map_entries", &[("map", "SYSCALL_START")]);
    assert!(threads >= 1.0, "the fallback's entry-time hash has the sleeping thread: {threads}");
}

#[test]
fn fallback_build_forgets_the_slots_of_removed_cgroups() {
    forgets_the_slots_of_removed_cgroups(&FALLBACK);
}

#[test]
fn hashed_slots_build_forgets_the_slots_of_removed_cgroups() {
    forgets_the_slots_of_removed_cgroups(&HASHED_SLOTS);
}

fn forgets_the_slots_of_removed_cgroups(build: &Build) {
    if !privileged() {
        return;
    }
    let _serial = crate::support::serial();
    // Twice as many cgroups as slots, in batches: each finds a slot only if the slots of the
    // removed ones come back, and the hash of slots (as big as the slots) never fills only if
    // recycling removes their entries.
    const SLOTS: usize = 64;
    const CGROUPS: usize = 2 * SLOTS;
    let (_dir, agent) =
        agent_of(build, &format!("[syscalls]\nmax_cgroups = {SLOTS}\nforget_after_seconds = 1\n"));
    // The host's busy cgroups take their slots first.
    std::thread::sleep(Duration::from_secs(2));
    let full = |samples: &[crate::support::Sample], map: &str| {
        value(samples, "kernsight_bpf_map_full_total", &[("map", map)])
    };
    let start = parse(&agent.scrape());
    let storage_full_at_start = full(&start, "cgroup_storage");
    let in_use = value(&start, "kernsight_bpf_map_entries", &[("map", "SYSCALL_ROWS")]) as usize;
    // Half the slots the host leaves free, so that its own new cgroups still find room.
    let batch = (SLOTS.saturating_sub(in_use) / 2).clamp(8, 24);
    let mut made = 0;
    for round in 0.. {
        if made >= CGROUPS {
            break;
        }
        let cgroups: Vec<TestCgroup> =
            (0..batch).map(|i| TestCgroup::create(&format!("{}-churn{round}-{i}", build.object))).collect();
        for cgroup in &cgroups {
            cgroup.run(|| {
                getppid_times(200);
                0
            });
        }
        made += cgroups.len();
        let samples = parse(&agent.scrape());
        for cgroup in &cgroups {
            let calls = value(
                &samples,
                "kernsight_syscalls_total",
                &[("cgroup", &cgroup.label), ("syscall", "getppid")],
            );
            assert_eq!(
                calls,
                200.0,
                "round {round}: {} counted exactly in its own slot (slots full {} times)",
                cgroup.label,
                full(&samples, "cgroup_slots")
            );
        }
        let labels: Vec<String> = cgroups.iter().map(|c| c.label.clone()).collect();
        drop(cgroups);
        // Grace (1 s) plus a maintenance pass: wait until their slots are given back.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let samples = parse(&agent.scrape());
            let left = samples.iter().any(|s| {
                s.name == "kernsight_syscalls_total"
                    && s.labels.get("cgroup").is_some_and(|c| labels.contains(c))
            });
            if !left {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: removed cgroups not forgotten within 15 s");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let end = parse(&agent.scrape());
    assert_eq!(full(&end, "cgroup_storage"), storage_full_at_start, "the hash of slots never filled");
}
