//! `kernsight top --once`: one snapshot of a running agent, ranked, with the workloads the test
//! runs in its own cgroups.

use std::{process::Command, time::Duration};

use crate::support::{
    Agent, BINARY, TestCgroup, failing_openat_times, getppid_times, privileged, serial, value,
};

/// About 5 s of getppid and failing openat calls, in bursts.
fn busy() -> i32 {
    for _ in 0..50 {
        getppid_times(5_000);
        failing_openat_times(500);
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(100_000) };
    }
    0
}

/// About 5 s of a few getppid calls.
fn quiet() -> i32 {
    for _ in 0..50 {
        getppid_times(5);
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(100_000) };
    }
    0
}

#[test]
fn once_prints_one_ranked_snapshot() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&[]);
    let busy_cgroup = TestCgroup::create("top-busy");
    let quiet_cgroup = TestCgroup::create("top-quiet");
    let (busy_label, quiet_label) = (busy_cgroup.label.clone(), quiet_cgroup.label.clone());
    let workers = [
        std::thread::spawn(move || busy_cgroup.run(busy)),
        std::thread::spawn(move || quiet_cgroup.run(quiet)),
    ];
    // Both workloads run (the agent counts their calls) before top takes its two samples.
    agent.scrape_until(Duration::from_secs(10), |samples| {
        let calls = |label: &str| {
            value(samples, "kernsight_syscalls_total", &[("cgroup", label), ("syscall", "getppid")])
        };
        let (busy, quiet) = (calls(&busy_label), calls(&quiet_label));
        if busy > 0.0 && quiet > 0.0 {
            Ok(())
        } else {
            Err(format!("getppid calls: busy {busy}, quiet {quiet}"))
        }
    });
    let address = agent.address.to_string();
    let out = Command::new(BINARY)
        .args(["top", "--once", "--agent", &address, "--interval", "2s", "--limit", "1000"])
        .output()
        .expect("run kernsight top");
    for worker in workers {
        assert_eq!(worker.join().expect("workload thread"), 0);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "no screen control with --once");
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    for column in [
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "SYSCALLS/S",
        "ERRORS/S",
        "THROTTLED%",
        "RUNQ_MS",
        "THROTTLED_MS/S",
        "CONTENDED_MS/S",
        "OOM_KILLS",
    ] {
        assert!(header.contains(&column), "{column} missing: {}", lines[0]);
    }
    let cell = |row: &[&str], column: &str| -> f64 {
        let at = header.iter().position(|h| *h == column).unwrap_or(usize::MAX);
        row.get(at).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let row_of = |label: &str| -> (usize, Vec<&str>) {
        lines
            .iter()
            .enumerate()
            .find_map(|(i, l)| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                (cells.get(2) == Some(&label)).then_some((i, cells))
            })
            .unwrap_or_else(|| panic!("no row for {label}:\n{text}"))
    };
    let (busy_rank, busy_row) = row_of(&busy_label);
    let (quiet_rank, quiet_row) = row_of(&quiet_label);
    // 5,500 calls per ~0.1 s burst: thousands per second; at most 55 per second for the quiet one.
    assert!(cell(&busy_row, "SYSCALLS/S") > 5_000.0, "{text}");
    assert!(cell(&busy_row, "ERRORS/S") > 500.0, "failing openat: {text}");
    assert!(cell(&quiet_row, "SYSCALLS/S") < 500.0, "{text}");
    assert!(busy_rank < quiet_rank, "ranked by syscalls/s:\n{text}");
    assert_eq!(cell(&busy_row, "OOM_KILLS"), -1.0, "no kill: `-`\n{text}");
    let rates: Vec<f64> =
        lines[1..].iter().map(|l| cell(&l.split_whitespace().collect::<Vec<_>>(), "SYSCALLS/S")).collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "sorted, highest first: {rates:?}");
}

#[test]
fn a_missing_agent_is_a_clear_error() {
    let out = Command::new(BINARY).args(["top", "--once", "--agent", "127.0.0.1:1"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no kernsight agent answers at 127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("kernsight run"), "says how to fix it: {stderr}");
}
