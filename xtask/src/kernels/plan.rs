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
    "net_xdp",
    "tcp",
    "packet_drops",
    "capabilities",
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
    ("trace_containers", Run::Not(CONTAINERS)),
    ("net", Run::Not(NETWORK)),
    ("net_kernel", Run::Not(NETWORK)),
    ("tcp", Run::Not(NETWORK)),
    ("packet_drops", Run::Not(NETWORK)),
    ("trace", Run::Skipping(&[("syscall_counts_are_exact_and_match_strace_and_bpftrace", BPFTRACE)])),
    (
        "reliability",
        Run::Skipping(&[(
            "churn_of_2000_cgroups_returns_memory_caches_and_series",
            "2,000 cgroups take 5 to 10 minutes under TCG, a third of the matrix's budget; the \
             bookkeeping it checks is the same on every kernel and runs on the host",
        )]),
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

/// Agent configuration the integration tests run with on a kernel (through `KERNSIGHT_CONFIG`,
/// which a test's own `--config` replaces): families known not to attach there switched off.
/// Most tests start agents that must become ready (`/readyz` 200, every enabled family
/// attached); with a family that cannot attach left on, every one of them would fail for that
/// one reason and hide what else breaks. The smoke run keeps the default configuration, so the
/// family's row still shows its failure, and the tests of the family itself are known failures
/// below, each by name.
pub const TEST_CONFIGS: &[(&str, &str, &str)] = &[(
    "6.12",
    "[security]\ncapability_checks = false\n[network]\nxdp = false\n",
    "capabilities: no cap_capable tracepoint on 6.12; net_xdp: the guests have no default route",
)];

pub fn test_config(kernel: &str) -> Option<&'static str> {
    TEST_CONFIGS.iter().find(|(k, _, _)| *k == kernel).map(|(_, toml, _)| *toml)
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

const fn known(kernel: &'static str, cell: &'static str, reason: &'static str) -> KnownFailure {
    KnownFailure { kernel, cell, evidence: None, reason }
}

const TOO_OLD: &str = "kernsight refuses kernels older than 6.2 (cgroup local storage); feature-probing fallbacks will lift this";
/// What the agent says when it refuses the kernel (`kernel::preflight::KernelTooOld`).
const TOO_OLD_EVIDENCE: &str = "is too old: kernsight needs Linux";
const NO_ROUTE: &str = "the guests have no network interface, so no default route for XDP to watch";
const NO_CAP_CAPABLE: &str =
    "tracepoint capability:cap_capable is newer than 6.12 (no btf_trace_cap_capable)";
const CAPS_OFF: &str = "the capabilities family cannot attach on 6.12 (no cap_capable tracepoint)";

/// A 6.12 test that starts its agent with a `--config` of its own, which replaces the tests'
/// `KERNSIGHT_CONFIG`: capabilities and net_xdp stay on, fail to attach, and `/readyz` answers 503
/// where the test waits for 200.
const fn own_config(cell: &'static str) -> KnownFailure {
    KnownFailure {
        kernel: "6.12",
        cell,
        evidence: Some("/readyz answered 503"),
        reason: "its own --config replaces the tests' KERNSIGHT_CONFIG, so capabilities and net_xdp \
                 stay on, fail to attach and keep /readyz at 503",
    }
}

/// `kernsight trace` has no version check: on these kernels its object fails to load on the
/// cgroup local storage map (`BPF_MAP_TYPE_CGRP_STORAGE`, 6.2).
const NO_CGROUP_STORAGE: &str = "kernsight trace does not check the kernel version; its object fails to load \
     on the cgroup local storage map CGROUP_SLOTS (6.2 and later); feature-probing fallbacks will lift this";
/// ... and on 5.10 first on the task local storage map of the run-queue programs (5.11).
const NO_TASK_STORAGE: &str = "kernsight trace does not check the kernel version; its object fails to load \
     on the task local storage map RUNQ_START (5.11 and later) before CGROUP_SLOTS";

/// On a kernel the agent refuses: everything that starts it, and the traces that cannot load.
const fn refused(kernel: &'static str) -> [KnownFailure; 7] {
    [
        known(kernel, "check", TOO_OLD),
        known(kernel, "agent", TOO_OLD),
        known(kernel, "ready", TOO_OLD),
        known(kernel, "probe:*", TOO_OLD),
        known(kernel, "v2:*", TOO_OLD),
        KnownFailure { kernel, cell: "test:*", evidence: Some(TOO_OLD_EVIDENCE), reason: TOO_OLD },
        KnownFailure {
            kernel,
            cell: "test:*",
            evidence: Some("failed to create map `CGROUP_SLOTS`: Invalid argument"),
            reason: NO_CGROUP_STORAGE,
        },
    ]
}

const REFUSED_5_10: [KnownFailure; 7] = refused("5.10");
const NO_TASK_STORAGE_5_10: &[KnownFailure] = &[KnownFailure {
    kernel: "5.10",
    cell: "test:*",
    evidence: Some("failed to create map `RUNQ_START`: Invalid argument"),
    reason: NO_TASK_STORAGE,
}];
const REFUSED_6_1: [KnownFailure; 7] = refused("6.1");

const ON_6_12: &[KnownFailure] = &[
    known("6.12", "ready", "the capabilities and net_xdp families do not attach, so /readyz stays 503"),
    known("6.12", "probe:capabilities", NO_CAP_CAPABLE),
    known("6.12", "probe:net_xdp", NO_ROUTE),
    known("6.12", "test:capabilities::binds_below_1024_count_net_bind_service_granted_and_denied", CAPS_OFF),
    known("6.12", "test:capabilities::full_capability_map_counts_in_other", CAPS_OFF),
    known("6.12", "test:capabilities::checks_from_a_user_namespace_are_nested", CAPS_OFF),
    known(
        "6.12",
        "test:syscalls::counts_syscalls_and_errnos_per_cgroup_and_not_in_the_sibling",
        "expects every family's programs attached (19); without cap_capable and XDP there are 17",
    ),
    own_config("test:families::map_fill_gauges_exist_for_every_family_with_the_syscall_family_off"),
    own_config("test:restart::counters_continue_across_kill_9_and_restart"),
    own_config("test:syscalls::churn_reuses_slots_and_forgets_removed_cgroups"),
    own_config("test:syscalls::full_slot_table_counts_into_other_and_says_so"),
    known(
        "6.12",
        "test:trace::presets_name_what_the_test_caused",
        "traces the `cap` preset, whose tracepoint 6.12 lacks",
    ),
];

/// Every known failure, by kernel.
const KNOWN_FAILURES: &[&[KnownFailure]] = &[&REFUSED_5_10, NO_TASK_STORAGE_5_10, &REFUSED_6_1, ON_6_12];

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
        assert!(known_failure("5.10", "probe:syscalls", "").is_some());
        assert!(known_failure("5.10", "boot", "").is_none());
        assert!(known_failure("6.12", "probe:syscalls", "").is_none());
        assert_eq!(known_failure("6.12", "probe:capabilities", ""), Some((NO_CAP_CAPABLE, true)));
        assert!(known_failure("7.0", "boot", "").is_none());
    }

    #[test]
    fn a_pattern_over_tests_holds_only_with_its_evidence() {
        let refused =
            "kernsight did not start; log:\nError: kernel 5.10.0 is too old: kernsight needs Linux 6.2";
        assert_eq!(known_failure("5.10", "test:oom::a", refused), Some((TOO_OLD, false)));
        assert_eq!(known_failure("5.10", "test:oom::a", "assertion failed: anon >= 20 MiB"), None);
        assert!(!expected_to_fail("5.10", "test:oom::a"));
        assert!(expected_to_fail("6.12", "test:capabilities::full_capability_map_counts_in_other"));
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
}
