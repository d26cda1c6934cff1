//! What the guests run and what each kernel is expected to pass: data, so that when kernsight
//! learns to run on another kernel the expectation is tightened here and nothing else changes.

/// Probe families of the agent's registry (`bpf::FAMILIES`), shown as rows even for a kernel
/// where the agent does not start. A guest whose agent serves reports the registry itself (every
/// `kernsight_probe_attached` series); the report fails when the two disagree, so this list
/// follows the registry.
pub const FAMILIES: &[&str] = &[
    "syscalls",
    "cgroups",
    "oom",
    "runqueue",
    "processes",
    "net_cgroup",
    "net_tc",
    "net_xdp",
    "tcp",
    "packet_drops",
    "capabilities",
    "memory_reclaim",
    "block_io",
    "dns",
    "escape",
];

/// Host programs that some tests call, copied into the guests at the same paths with their
/// libraries: bpftool, setpriv, promtool and strace, and the coreutils the exec tests run
/// (busybox's applets cannot be copied under another name, and busybox has no `/usr/bin/env`).
pub const HOST_TOOLS: &[&str] = &[
    "/usr/sbin/bpftool",
    "/usr/bin/setpriv",
    "/usr/bin/promtool",
    "/usr/bin/strace",
    "/bin/true",
    "/bin/echo",
    "/bin/ls",
    "/bin/cat",
    "/usr/bin/env",
];

/// Files of the repository that tests read at run time (by their path on the host).
pub const REPOSITORY_FILES: &[&str] = &["docs/metrics.md"];

/// How one area of the integration tests (a module of `agent/tests/integration/`) runs in a
/// guest.
pub enum Run {
    /// Run, leaving out these tests (name within the area, why).
    Skipping(&'static [(&'static str, &'static str)]),
    /// Not run at all, for this reason.
    Not(&'static str),
}

const CONTAINERS: &str = "needs podman or containerd, which the guests do not have";
const NETWORK: &str =
    "needs network namespaces, veth pairs and nftables (kernel modules the guests do not load)";
const BPFTRACE: &str = "needs bpftrace, which the guests do not have";
const PROMETHEUS: &str = "needs the prometheus server, which the guests do not have";

/// Areas that may not run completely in a guest, and why. Any other area runs whole.
const GUEST_AREAS: &[(&str, Run)] = &[
    ("advise", Run::Not(CONTAINERS)),
    ("containers", Run::Not(CONTAINERS)),
    ("cri", Run::Not(CONTAINERS)),
    (
        "deploy",
        Run::Not("builds and runs the container image with podman; checks manifests with helm and kubectl"),
    ),
    ("harness", Run::Not("its clean-up proof includes a podman container and a veth pair")),
    ("posture", Run::Not(CONTAINERS)),
    ("seccomp_drift", Run::Not(CONTAINERS)),
    (
        "escape",
        Run::Skipping(&[("every_attempt_is_counted_for_its_container_with_the_kernels_answer", CONTAINERS)]),
    ),
    ("trace_containers", Run::Not(CONTAINERS)),
    ("workloads", Run::Not(CONTAINERS)),
    ("net", Run::Not(NETWORK)),
    ("net_kernel", Run::Not(NETWORK)),
    (
        "net_tc",
        Run::Skipping(&[
            ("tcx_counts_a_known_flow_on_ingress_and_egress", NETWORK),
            ("clsact_counts_a_known_flow_on_ingress_and_egress", NETWORK),
            ("the_clsact_qdisc_is_removed_at_exit_only_when_the_agent_added_it", NETWORK),
            ("a_clsact_qdisc_the_agent_added_stays_when_another_filter_was_attached_to_it", NETWORK),
            ("filters_of_a_killed_agent_are_replaced_not_doubled", NETWORK),
        ]),
    ),
    (
        "interface_slots",
        Run::Skipping(&[
            ("tc_counts_exactly_in_slots_and_in_the_hash_when_two_interfaces_share_one", NETWORK),
            ("xdp_counts_exactly_in_slots_and_in_the_hash_when_two_interfaces_share_one", NETWORK),
            ("tc_rows_go_on_for_the_same_interface_and_start_from_zero_for_another", NETWORK),
            ("xdp_rows_go_on_for_the_same_interface_and_start_from_zero_for_another", NETWORK),
        ]),
    ),
    ("tcp", Run::Not(NETWORK)),
    ("conntrack", Run::Not(NETWORK)),
    ("diagnose", Run::Not(NETWORK)),
    (
        "block_io",
        Run::Not(
            "needs a loop device the test creates (losetup), and the guests load no loop module (Debian \
             builds it as a module) and have no disk",
        ),
    ),
    (
        "packet_drops",
        Run::Skipping(&[
            ("udp_to_a_port_without_socket_is_a_no_socket_drop", NETWORK),
            ("a_netfilter_drop_is_counted_for_the_sending_cgroup", NETWORK),
        ]),
    ),
    (
        "http_security",
        Run::Skipping(&[
            ("prometheus_scrapes_over_tls_with_basic_auth_and_anonymous_scrapes_get_401", PROMETHEUS),
            ("prometheus_scrapes_with_a_client_certificate_and_a_wrong_one_fails_the_handshake", PROMETHEUS),
            (
                "slow_and_non_reading_clients_are_closed_and_scrapes_still_answer",
                "its bounds (every attacking connection closed within 10 s of 500 opened) are timings of a \
                 host, which software emulation (TCG) misses by a wide margin; the server code is the same \
                 on every kernel",
            ),
            (
                "shipped_web_configs_are_valid_agent_web_configs",
                "reads the manifests under deploy/ and renders the chart with helm: nothing kernel-specific",
            ),
        ]),
    ),
    ("trace", Run::Skipping(&[("syscall_counts_are_exact_and_match_strace_and_bpftrace", BPFTRACE)])),
    // The recorded API runs on the guest's loopback; the end-to-end test runs pods through containerd.
    (
        "kube_api",
        Run::Skipping(&[(
            "the_agent_takes_owners_from_the_api_and_labels_for_pods_it_does_not_know",
            CONTAINERS,
        )]),
    ),
    (
        "oom",
        Run::Skipping(&[
            ("an_oom_kill_is_reported_alike_with_bpftrace_on_mark_victim_first", BPFTRACE),
            ("the_kill_is_attributed_alike_with_bpftrace_on_mark_victim_first", BPFTRACE),
        ]),
    ),
    (
        "cgroup_storms",
        Run::Not(
            "its bound is /healthz p99 under 100 ms on a busy 2-CPU machine, which software emulation (TCG) \
             cannot give; the lookups by handle it relies on are unit-tested on the host's cgroup root",
        ),
    ),
    (
        "reliability",
        Run::Not(
            "2,000 cgroups, and 4,000 execs against a stalled consumer, take 3 to 10 minutes each under \
             TCG, half of a guest's budget; the bookkeeping and the ring buffer's loss accounting they check \
             (bpf_ringbuf_reserve failing, counted per CPU) behave the same on every kernel since 5.8 and \
             run on the host",
        ),
    ),
];

pub fn guest_run(area: &str) -> &'static Run {
    const WHOLE: Run = Run::Skipping(&[]);
    GUEST_AREAS.iter().find(|(name, _)| *name == area).map_or(&WHOLE, |(_, run)| run)
}

/// The area of a test (`oom` of `oom::the_kill_is_attributed_...`).
pub fn area_of(test: &str) -> &str {
    test.split_once("::").map_or(test, |(area, _)| area)
}

/// What the guests run of the integration binary's tests: each area with the full names of the
/// tests to run, in the binary's order.
pub fn guest_tests(all: &[String]) -> Vec<(String, Vec<String>)> {
    let mut areas: Vec<(String, Vec<String>)> = Vec::new();
    for test in all {
        let area = area_of(test);
        let Run::Skipping(skips) = guest_run(area) else { continue };
        if skips
            .iter()
            .any(|(skip, _)| test.strip_prefix(area).and_then(|t| t.strip_prefix("::")) == Some(*skip))
        {
            continue;
        }
        match areas.iter_mut().find(|(name, _)| name == area) {
            Some((_, tests)) => tests.push(test.clone()),
            None => areas.push((area.to_owned(), vec![test.clone()])),
        }
    }
    areas
}

/// What `test-kernels --quick` (CI's matrix, on every change) runs of the tests after the smoke
/// run: on each kernel, the families' kernel programs counting what a test caused, exactly, with
/// the build the kernel gets (hashed-slots on 5.11 to 6.1, fallback before). An entry ending in
/// `::` is a whole area, less what the guests skip. The smoke run before them already checks
/// that every family attaches and the cgroup v2 collectors (memory by kind, `cpu.max`
/// throttling, pids, PSI).
pub const QUICK: &[&str] = &[
    "check::",
    "families::",
    // 500 failed openat counted exactly in the test's cgroup, and every program attached.
    "syscalls::counts_syscalls_and_errnos_per_cgroup_and_not_in_the_sibling",
    "syscalls::latency_histogram_measures_sleeps_in_the_kernel",
    // An OOM kill in a memory.max cgroup, attributed to the victim's cgroup; page cache is no kill.
    "oom::",
    // Drops on every kernel: by reason from 5.17, as NOT_SPECIFIED before.
    "packet_drops::udp_to_a_closed_loopback_port_is_a_drop_on_every_kernel",
    // Throttled waits, stamped at their start, whether the other waits start at the scheduler's
    // account or are stamped too.
    "cpu_wait::a_busy_loop_under_its_quota_waits_throttled_as_long_as_cpu_stat_says",
    "cpu_wait::a_busy_loop_under_its_quota_waits_throttled_as_long_as_cpu_stat_says_with_stamped_waits",
    "sched::runqueue_latency_sees_contention_and_not_in_the_idle_sibling",
    // Waits timed by the run queue's clock (ktime where the kernel has no group scheduling),
    // from the scheduler's account of their start where the kernel keeps it (with and without
    // the wakeup programs), and stamped by the wakeup programs.
    "sched::runqueue_waits_sum_to_the_kernels_own_account_of_them",
    "sched::runqueue_waits_sum_to_the_kernels_own_account_of_them_without_the_reason",
    "sched::runqueue_waits_sum_to_the_kernels_own_account_of_them_with_stamped_waits",
    "capabilities::binds_below_1024_count_net_bind_service_granted_and_denied",
    "escape::the_kernel_skips_a_new_cgroups_setup_then_counts_every_attempt",
    "dns::rcodes_timeouts_and_latency_are_exact_per_cgroup_over_udp_tcp_and_ipv6",
    "memory_reclaim::reclaim_stalls_count_for_the_cgroup_at_its_limit_and_not_its_sibling",
    "trace::counts_by_cgroup_are_made_in_the_kernel_and_exact",
    "trace::exec_in_a_cgroup_prints_exactly_the_commands_in_order",
    // Entry times: in the task on 5.11+, in an LRU hash by thread before.
    "trace::syscall_latency_is_timed_in_the_kernel_per_call_and_in_histograms",
    "trace_oom::",
    // The TC programs' slot rows, through clsact filters before 6.6 and tcx links after, and
    // the XDP program's (off by default: no family row of the matrix loads it).
    "interface_slots::tc_on_loopback_counts_in_its_slot",
    "interface_slots::xdp_on_loopback_counts_in_its_slot",
];

fn quick_selects(entry: &str, test: &str) -> bool {
    match entry.strip_suffix("::") {
        Some(area) => area_of(test) == area,
        None => test == entry,
    }
}

/// The guests' tests (`guest_tests`) narrowed to `QUICK`.
pub fn quick(areas: Vec<(String, Vec<String>)>) -> Vec<(String, Vec<String>)> {
    areas
        .into_iter()
        .filter_map(|(area, tests)| {
            let tests: Vec<String> =
                tests.into_iter().filter(|t| QUICK.iter().any(|entry| quick_selects(entry, t))).collect();
            (!tests.is_empty()).then_some((area, tests))
        })
        .collect()
}

/// Names in this plan that the integration binary no longer has (an area or a skipped test
/// renamed or removed): the plan must follow the tests.
pub fn stale_names(all: &[String]) -> Vec<String> {
    let mut stale = Vec::new();
    for (area, run) in GUEST_AREAS {
        if !all.iter().any(|t| area_of(t) == *area) {
            stale.push(format!("area `{area}`"));
        }
        if let Run::Skipping(skips) = run {
            for (test, _) in *skips {
                let name = format!("{area}::{test}");
                if !all.contains(&name) {
                    stale.push(format!("test `{name}`"));
                }
            }
        }
    }
    // A quick entry must select a test the guests run: one that names a test left out would
    // quietly run nothing.
    let run = guest_tests(all);
    for entry in QUICK {
        if !run.iter().flat_map(|(_, tests)| tests).any(|t| quick_selects(entry, t)) {
            stale.push(format!("quick test `{entry}` (not a test the guests run)"));
        }
    }
    for failure in known_failures() {
        if let Some(test) = failure.cell.strip_prefix("test:").filter(|t| !t.ends_with('*')) {
            if !all.iter().any(|t| t == test) {
                stale.push(format!("known failure `{test}` on {}", failure.kernel));
            }
        }
    }
    stale
}

/// Areas and single tests the guests leave out: (what, why).
pub fn not_run_in_guests() -> Vec<(String, &'static str)> {
    let mut list = Vec::new();
    for (area, run) in GUEST_AREAS {
        match run {
            Run::Not(why) => list.push((format!("`{area}::`"), *why)),
            Run::Skipping(tests) => {
                list.extend(tests.iter().map(|(test, why)| (format!("`{area}::{test}`"), *why)))
            }
        }
    }
    list
}

/// A cell a kernel may fail today, and why. Every other cell must pass (or be skipped).
pub struct KnownFailure {
    pub kernel: &'static str,
    /// `agent`, `probe:net_xdp`, `v2:memory`, or one test, `test:oom::name`. A pattern ending in
    /// `*` covers every cell it prefixes; one that covers tests must name `evidence`.
    pub cell: &'static str,
    /// Text the failure's output must contain: a pattern over many tests holds only for the one
    /// cause it names, so that a test failing for another reason is still a regression.
    pub evidence: Option<&'static str>,
    pub reason: &'static str,
}

// Unused while no kernel has a known failure of one cell (the tests' list has one).
#[cfg_attr(not(test), allow(dead_code))]
const fn known(kernel: &'static str, cell: &'static str, reason: &'static str) -> KnownFailure {
    KnownFailure { kernel, cell, evidence: None, reason }
}

const ON_5_10: &[KnownFailure] = &[];
const ON_6_1: &[KnownFailure] = &[];
const ON_6_12: &[KnownFailure] = &[];

/// Every known failure, by kernel.
#[cfg(not(test))]
const KNOWN_FAILURES: &[&[KnownFailure]] = &[ON_5_10, ON_6_1, ON_6_12];

/// The tests of the expectations and of the report also see the one 5.10 had until its memory
/// check compared kernsight with the kernel's own count: no kernel has one today.
#[cfg(test)]
const KNOWN_FAILURES: &[&[KnownFailure]] =
    &[ON_5_10, ON_6_1, ON_6_12, &[known("5.10", "v2:memory", "the shmem of the 8 MiB file was 8 KiB short")]];

fn known_failures() -> impl Iterator<Item = &'static KnownFailure> {
    KNOWN_FAILURES.iter().flat_map(|list| list.iter())
}

/// Why `cell` may fail on `kernel` given what its failure printed, if it may; and whether the
/// expectation names this cell alone (then a pass means the expectation can be tightened).
pub fn known_failure(kernel: &str, cell: &str, output: &str) -> Option<(&'static str, bool)> {
    known_failures()
        .filter(|f| f.kernel == kernel && matches(f.cell, cell))
        .find(|f| f.evidence.is_none_or(|evidence| output.contains(evidence)))
        .map(|f| (f.reason, !f.cell.ends_with('*')))
}

/// Whether a cell that passed was expected to fail by an expectation naming it alone.
pub fn expected_to_fail(kernel: &str, cell: &str) -> bool {
    known_failures().any(|f| f.kernel == kernel && f.cell == cell)
}

fn matches(pattern: &str, cell: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => cell.starts_with(prefix),
        None => cell == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_name_known_kernels_and_match_by_prefix() {
        for failure in known_failures() {
            assert!(
                super::super::download::KERNELS.iter().any(|k| k.name == failure.kernel),
                "{}",
                failure.kernel
            );
            assert!(
                !(failure.cell.starts_with("test:") && failure.cell.ends_with('*'))
                    || failure.evidence.is_some(),
                "{}: a pattern over tests must name the evidence of its one cause",
                failure.cell
            );
        }
        assert!(known_failure("5.10", "v2:memory", "").is_some());
        assert!(known_failure("5.10", "boot", "").is_none());
        assert!(known_failure("5.10", "probe:packet_drops", "").is_none());
        assert!(known_failure("6.12", "probe:syscalls", "").is_none());
        assert!(matches!(known_failure("5.10", "v2:memory", ""), Some((_, true))));
        assert!(known_failure("6.12", "probe:net_xdp", "").is_none());
        assert!(!expected_to_fail("6.1", "test:oom::a"));
        assert!(known_failure("7.0", "boot", "").is_none());
    }

    #[test]
    fn areas_run_whole_unless_listed_and_skip_by_name() {
        let all: Vec<String> = [
            "oom::a",
            "oom::b",
            "cri::c",
            "trace::syscall_counts_are_exact_and_match_strace_and_bpftrace",
            "trace::d",
        ]
        .map(String::from)
        .to_vec();
        let areas = guest_tests(&all);
        assert_eq!(
            areas,
            vec![
                ("oom".to_owned(), vec!["oom::a".to_owned(), "oom::b".to_owned()]),
                ("trace".to_owned(), vec!["trace::d".to_owned()]),
            ]
        );
        let stale = stale_names(&all);
        assert!(stale.contains(&"area `advise`".to_owned()), "{stale:?}");
        assert!(!stale.iter().any(|s| s.contains("area `trace`")), "{stale:?}");
    }

    #[test]
    fn quick_keeps_whole_areas_and_named_tests_and_flags_entries_that_run_nothing() {
        let all: Vec<String> = [
            "oom::a",
            "oom::b",
            "syscalls::counts_syscalls_and_errnos_per_cgroup_and_not_in_the_sibling",
            "syscalls::other",
            "pins::c",
            "cri::d",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            quick(guest_tests(&all)),
            vec![
                ("oom".to_owned(), vec!["oom::a".to_owned(), "oom::b".to_owned()]),
                ("syscalls".to_owned(), vec![all[2].clone()]),
            ]
        );
        let stale = stale_names(&all);
        assert!(
            stale.contains(&"quick test `families::` (not a test the guests run)".to_owned()),
            "{stale:?}"
        );
        assert!(!stale.iter().any(|s| s.contains("quick test `oom::`")), "{stale:?}");
    }
}
