//! Under load and churn: ring-buffer losses are counted exactly and the agent recovers; memory,
//! caches and series return to where they started after thousands of short-lived cgroups.

use crate::support;

use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use crate::support::{
    Agent, Sample, TestCgroup, config_file, eventually, getppid_times, parse, path_str, privileged, value,
};

/// Forks and execs `/bin/true` `EXECS` times, one after the other.
fn exec_true<const EXECS: usize>() -> i32 {
    let path = CString::new("/bin/true").unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    for _ in 0..EXECS {
        // SAFETY: the child only calls execv and _exit.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
            if pid < 0 {
                return 1;
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                return 2;
            }
        }
    }
    0
}

/// Exec events the agent logged for a cgroup (debug level: one line each).
fn exec_lines(log: &str, label: &str) -> usize {
    let cgroup = format!(" cgroup={label} ");
    log.lines().filter(|l| l.contains(": exec ") && l.contains(&cgroup)).count()
}

/// The kernel side's own count of process events it could not queue: the agent's
/// PROCESS_EVENTS_LOST map (found among the maps the agent's descriptors hold), summed over CPUs.
fn kernel_lost_count(agent_pid: u32) -> u64 {
    let fdinfo = std::fs::read_dir(format!("/proc/{agent_pid}/fdinfo")).expect("agent fdinfo");
    let ids: Vec<String> = fdinfo
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines().find_map(|l| l.strip_prefix("map_id:").map(|id| id.trim().to_owned()))
        })
        .collect();
    let bpftool = |args: &[&str]| {
        let out = std::process::Command::new("bpftool").args(args).output().expect("bpftool");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = ids
        .iter()
        .find(|id| bpftool(&["map", "show", "id", id]).contains("name PROCESS_EVENTS_ "))
        .expect("the agent holds PROCESS_EVENTS_LOST");
    let dump: serde_json::Value =
        serde_json::from_str(&bpftool(&["-j", "map", "dump", "id", id])).expect("JSON");
    dump[0]["values"]
        .as_array()
        .expect("per-CPU values")
        .iter()
        .map(|cpu| {
            let bytes: Vec<u8> = cpu["value"]
                .as_array()
                .expect("value bytes")
                .iter()
                .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                .collect();
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        })
        .sum()
}

#[test]
fn a_stalled_consumer_loses_counted_events_and_recovers() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    const STORM: usize = 4_000;
    const AFTER: usize = 50;
    let agent = Agent::start(&["--log-level", "info,kernsight::events::processes=debug"]);
    let storm = TestCgroup::create("storm");
    let lost_metric = |samples: &[Sample]| {
        value(samples, "kernsight_ring_buffer_lost_events_total", &[("ring", "process_events")])
    };

    // The consumer stalls (SIGSTOP) while 4,000 processes exec and exit: 8,000 events for a ring
    // that holds about 2,400.
    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    let status = storm.run(exec_true::<STORM>);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    assert_eq!(status, 0, "the exec storm ran");

    // Drained: the read count stops moving (the same over half a second).
    let mut read = -1.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        std::thread::sleep(Duration::from_millis(500));
        let samples = parse(&agent.scrape());
        let now = value(&samples, "kernsight_ring_buffer_events_total", &[("ring", "process_events")]);
        if now == read || Instant::now() > deadline {
            break samples;
        }
        read = now;
    };
    let lost = lost_metric(&samples);
    let delivered = exec_lines(&agent.log(), &storm.label);
    assert!(lost > 0.0, "a stalled consumer must lose events");
    assert_eq!(lost as u64, kernel_lost_count(agent.pid()), "reported loss = the kernel side's count");
    assert!(delivered < STORM, "some of the storm's execs were lost ({delivered} delivered)");
    assert!(
        (STORM - delivered) as f64 <= lost,
        "every exec not delivered ({}) is in the lost count ({lost})",
        STORM - delivered
    );
    // The in-kernel aggregate never loses: it counts every exec.
    let execs = value(&samples, "kernsight_process_execs_total", &[("cgroup", &storm.label)]);
    assert_eq!(execs, STORM as f64, "aggregated exec count");

    // Load stops: events flow again, none lost.
    let calm = TestCgroup::create("calm");
    assert_eq!(calm.run(exec_true::<AFTER>), 0);
    eventually(Duration::from_secs(10), || match exec_lines(&agent.log(), &calm.label) {
        AFTER => Ok(()),
        delivered => Err(format!("{delivered} of the {AFTER} execs after the storm delivered")),
    });
    let samples = parse(&agent.scrape());
    assert_eq!(lost_metric(&samples), lost, "no loss once the consumer keeps up");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn churn_of_2000_cgroups_returns_memory_caches_and_series() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    const CGROUPS: usize = 2_000;
    const BATCH: usize = 100;
    const CALLS: usize = 100;
    let (_dir, config) = config_file("[syscalls]\nforget_after_seconds = 1\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let warm_up = || {
        for _ in 0..3 {
            let _ = agent.scrape();
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    warm_up();
    let before = parse(&agent.scrape());
    let rss_before = rss_kib(agent.pid());
    let series_before = before.len() as f64;
    let gauge = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| value(samples, name, labels);

    for round in 0..CGROUPS / BATCH {
        let batch: Vec<TestCgroup> =
            (0..BATCH).map(|i| TestCgroup::create(&format!("churn2k-{round}-{i}"))).collect();
        for cgroup in &batch {
            cgroup.run(|| {
                getppid_times(CALLS);
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
            assert_eq!(calls, CALLS as f64, "round {round}: {} counted once, exactly", cgroup.label);
        }
        // Short-lived: gone before the next batch comes, as on a node running jobs. Their slots
        // come back after the grace period (1 s) and a maintenance pass.
        let prefix = format!("churn2k-{round}-");
        drop(batch);
        eventually(Duration::from_secs(15), || {
            if agent.scrape().contains(&prefix) {
                Err(format!("round {round}: series of removed cgroups still exported"))
            } else {
                Ok(())
            }
        });
    }
    // Every test cgroup is gone: after the grace period and a maintenance pass, so are its series.
    let after = eventually(Duration::from_secs(20), || {
        let text = agent.scrape();
        if text.contains("churn2k-") {
            Err("series of removed cgroups are still exported".to_owned())
        } else {
            Ok(parse(&text))
        }
    });
    warm_up();
    let rss_after = rss_kib(agent.pid());
    let series_after = after.len() as f64;
    let cgroups = |samples: &[Sample]| {
        samples.iter().filter_map(|s| s.labels.get("cgroup")).collect::<std::collections::HashSet<_>>().len()
            as f64
    };
    eprintln!(
        "RSS {rss_before} KiB -> {rss_after} KiB; series {series_before} -> {series_after}; cgroups {} -> {}; index {} -> {}",
        cgroups(&before),
        cgroups(&after),
        gauge(&before, "kernsight_cgroup_index_entries", &[]),
        gauge(&after, "kernsight_cgroup_index_entries", &[])
    );
    // Bounds: the allocator keeps some freed pages, and the host's own cgroups come and go
    // meanwhile (this machine's tooling makes a cgroup per command). Series are counted by the
    // cgroups they name: the host's busy cgroups also add series as they use new syscalls, while
    // 2,000 leaked cgroups would each leave series of their own.
    assert!(rss_after <= rss_before + 8.0 * 1024.0, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    let (cgroups_before, cgroups_after) = (cgroups(&before), cgroups(&after));
    assert!(cgroups_after <= cgroups_before + 50.0, "cgroups in series: {cgroups_before} → {cgroups_after}");
    for (name, labels, slack) in [
        // Each churned cgroup had a slot, exit counts and run-queue buckets: a leak would leave
        // 2,000 of each (or fill the 512 slots); the slack is for the host's own activity.
        ("kernsight_cgroup_index_entries", &[][..], 20.0),
        ("kernsight_bpf_map_entries", &[("map", "SYSCALL_ROWS")][..], 20.0),
        ("kernsight_bpf_map_entries", &[("map", "SYSCALL_ERRORS")][..], 200.0),
        ("kernsight_bpf_map_entries", &[("map", "PROCESS_COUNTS")][..], 200.0),
        ("kernsight_bpf_map_entries", &[("map", "RUNQ_LATENCY")][..], 400.0),
        ("kernsight_metadata_cache_entries", &[("cache", "containers")][..], 20.0),
    ] {
        let (start, end) = (gauge(&before, name, labels), gauge(&after, name, labels));
        assert!(end <= start + slack, "{name}{labels:?}: {start} before, {end} after");
    }
    assert_eq!(
        gauge(&after, "kernsight_bpf_map_full_total", &[("map", "cgroup_slots")]),
        0.0,
        "no slot refused"
    );
}
