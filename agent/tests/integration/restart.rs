//! Counters that outlive the agent: maps pinned in bpffs carry the counts across `kill -9` and a
//! restart; pins of another shape are replaced, never misread; `kernsight cleanup` removes them.

use std::{os::unix::fs::MetadataExt as _, process::Command};

use crate::support::{
    self, Agent, BINARY, PinDir, TestCgroup, failing_openat_times, getppid_times, parse, path_str,
    pinned_ids, privileged, programs_unloaded, unique_pin_dir, value,
};

const BEFORE: usize = 7_000;
const AFTER: usize = 5_000;

fn getppid_calls(agent: &Agent, cgroup: &TestCgroup) -> f64 {
    let samples = parse(&agent.scrape());
    value(&samples, "kernsight_syscalls_total", &[("cgroup", &cgroup.label), ("syscall", "getppid")])
}

/// Program ids the log lists, of the probes `of_probe` accepts.
fn program_ids_of(log: &str, of_probe: impl Fn(&str) -> bool) -> Vec<u32> {
    log.lines()
        .filter(|l| l.split("probe=\"").nth(1).and_then(|rest| rest.split('"').next()).is_some_and(&of_probe))
        .filter_map(|l| l.split("ids=[").nth(1))
        .filter_map(|rest| rest.split(']').next())
        .flat_map(|list| list.split(',').filter_map(|id| id.trim().parse().ok()).collect::<Vec<u32>>())
        .collect()
}

#[test]
fn counters_continue_across_kill_9_and_restart() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let pins = PinDir(unique_pin_dir("restart"));
    let pin_dir = path_str(&pins.0).to_owned();
    let cgroup = TestCgroup::create("restart");

    let first = Agent::start(&["--pin-dir", &pin_dir]);
    cgroup.run(|| {
        getppid_times(BEFORE);
        0
    });
    assert_eq!(getppid_calls(&first, &cgroup), BEFORE as f64, "counted before the kill");
    // Before kernel 6.6 the TC counters are clsact filters, which belong to the interface, not
    // to the process: a killed agent leaves them, and the next start removes them.
    let clsact = parse(&first.scrape()).iter().any(|s| {
        s.name == "kernsight_probe_info"
            && s.labels["probe"] == "net_tc"
            && s.labels["implementation"] == "clsact"
    });
    let log = first.log();
    let ids = program_ids_of(&log, |probe| !(clsact && probe == "net_tc"));
    let left_filters = program_ids_of(&log, |probe| clsact && probe == "net_tc");
    assert!(!ids.is_empty(), "program ids in the log:\n{log}");
    first.kill();

    // A killed agent leaves its pins, not its programs (their links closed with its descriptors).
    assert!(
        pins.0.join(format!("v{}/SYSCALL_ROWS", kernsight_common::MAP_LAYOUT_VERSION)).exists(),
        "the syscall rows stay pinned after kill -9"
    );
    programs_unloaded(&ids);

    let second = Agent::start(&["--pin-dir", &pin_dir]);
    programs_unloaded(&left_filters);
    assert!(second.log().contains("SYSCALL_ROWS"), "the log names the continued maps:\n{}", second.log());
    assert_eq!(
        getppid_calls(&second, &cgroup),
        BEFORE as f64,
        "the restarted agent continues, not from zero"
    );
    cgroup.run(|| {
        getppid_times(AFTER);
        0
    });
    assert_eq!(getppid_calls(&second, &cgroup), (BEFORE + AFTER) as f64, "before and after the restart");
    let status = second.stop();
    assert!(status.success(), "clean exit: {status}");

    // The same cgroup slot bookkeeping after the restart: the cgroup kept its slot, and a new
    // cgroup still finds a free one.
    let third = Agent::start(&["--pin-dir", &pin_dir]);
    let newcomer = TestCgroup::create("newcomer");
    newcomer.run(|| {
        getppid_times(AFTER);
        0
    });
    assert_eq!(getppid_calls(&third, &newcomer), AFTER as f64, "a new cgroup after two restarts");
    assert_eq!(getppid_calls(&third, &cgroup), (BEFORE + AFTER) as f64);
    drop(third);

    // Pins of another shape (a smaller slot bound) are replaced, and the log says so.
    let (_dir, config) = support::config_file("[syscalls]\nmax_cgroups = 64\n");
    let reshaped = Agent::start(&["--pin-dir", &pin_dir, "--config", path_str(&config)]);
    let log = reshaped.log();
    assert!(log.contains("do not fit this configuration"), "replacement is logged:\n{log}");
    assert_eq!(getppid_calls(&reshaped, &cgroup), 0.0, "replaced pins start from zero, never misread");
    drop(reshaped);

    // Pins of another layout version are removed at start-up.
    std::fs::create_dir_all(pins.0.join("v0")).expect("a stale version directory");
    let upgraded = Agent::start(&["--pin-dir", &pin_dir]);
    assert!(!pins.0.join("v0").exists(), "pins of another layout version are removed");
    assert!(upgraded.log().contains("another map layout"), "and the log says so:\n{}", upgraded.log());

    // A second agent on the same pins (a rolling update with surge) waits for them, then counts
    // in maps of its own rather than sharing the slot bookkeeping.
    // TC hooks take programs of several agents (tcx links, clsact filters): both are ready.
    let second_agent = Agent::start(&["--pin-dir", &pin_dir]);
    assert!(
        second_agent.log().contains("another kernsight process holds"),
        "the second agent says why it does not pin:\n{}",
        second_agent.log()
    );
    let late = TestCgroup::create("late");
    late.run(|| {
        getppid_times(AFTER);
        0
    });
    assert_eq!(getppid_calls(&second_agent, &late), AFTER as f64, "the unpinned agent counts");
    assert_eq!(getppid_calls(&upgraded, &late), AFTER as f64, "and so does the pinned one");
    drop(second_agent);

    // cleanup refuses while an agent holds the directory, then removes everything.
    let busy = Command::new(BINARY).args(["cleanup", "--pin-dir", &pin_dir]).output().expect("cleanup");
    assert!(!busy.status.success(), "cleanup while the agent runs must refuse");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("another kernsight process holds"));
    drop(upgraded);
    let cleanup = Command::new(BINARY).args(["cleanup", "--pin-dir", &pin_dir]).output().expect("cleanup");
    let stdout = String::from_utf8_lossy(&cleanup.stdout);
    assert!(cleanup.status.success(), "cleanup: {}", String::from_utf8_lossy(&cleanup.stderr));
    assert!(stdout.starts_with("removed ") && !stdout.starts_with("removed 0 "), "{stdout}");
    assert!(!pins.0.exists(), "cleanup removes the pin directory");
}

/// A cgroup removed while no agent ran is forgotten when the next one starts: no
/// `cgroup="cgroup_id:N"` series for the grace period, and its slot is free at once.
#[test]
fn cgroups_removed_while_stopped_are_forgotten_at_start() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let pins = PinDir(unique_pin_dir("removed-while-stopped"));
    let pin_dir = path_str(&pins.0).to_owned();
    let gone = TestCgroup::create("removed-while-stopped");
    let id = std::fs::metadata(&gone.path).expect("the cgroup's inode").ino();

    let first = Agent::start(&["--pin-dir", &pin_dir]);
    gone.run(|| {
        getppid_times(AFTER);
        // Failed calls too: their (cgroup, syscall, errno) entries must go with the slot.
        failing_openat_times(100);
        0
    });
    assert_eq!(getppid_calls(&first, &gone), AFTER as f64, "counted while the cgroup lived");
    let status = first.stop();
    assert!(status.success(), "clean exit: {status}");
    assert!(
        pinned_ids(&pins.0, "SLOT_OWNERS").contains(&id),
        "the cgroup {id} owns a pinned slot while no agent runs"
    );

    let label = gone.label.clone();
    drop(gone);
    let second = Agent::start(&["--pin-dir", &pin_dir]);
    let samples = parse(&second.scrape());
    let by_number = format!("cgroup_id:{id}");
    let stale: Vec<_> = samples
        .iter()
        .filter(|s| s.labels.get("cgroup").is_some_and(|c| *c == by_number || *c == label))
        .collect();
    assert!(stale.is_empty(), "series of the cgroup removed while no agent ran: {stale:?}");
    assert!(!pinned_ids(&pins.0, "SLOT_OWNERS").contains(&id), "its slot is free again");
    let log = second.log();
    assert!(
        log.contains("forgot the counts of cgroups removed while no agent ran"),
        "the log says so:\n{log}"
    );
}
