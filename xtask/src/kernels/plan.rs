//! What the guests run and what each kernel is expected to pass: data, so that when kernsight
//! learns to run on another kernel the expectation is tightened here and nothing else changes.

/// Probe families the agent reports in `kernsight_probe_attached`. Always shown as rows, so that
/// a kernel where the agent does not start still shows each family as failed; families the
/// agent reports beyond these get rows too.
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

/// Host tools that some tests call, copied into the guests with their libraries.
pub const HOST_TOOLS: &[&str] = &["bpftool", "setpriv", "promtool", "strace"];

/// How a test binary runs in a guest.
pub enum Run {
    /// Run, skipping these tests (name, why).
    Skipping(&'static [(&'static str, &'static str)]),
    /// Not run at all, for this reason.
    Not(&'static str),
}

const CONTAINERS: &str = "needs podman or containerd, which the guests do not have";
const NETWORK: &str =
    "needs network namespaces, veth pairs and nftables (kernel modules the guests do not load)";
const BPFTRACE: &str = "needs bpftrace, which the guests do not have";

/// Test binaries that may not run completely in a guest, and why. Any other binary runs whole.
const GUEST_TESTS: &[(&str, Run)] = &[
    ("advise", Run::Not(CONTAINERS)),
    ("containers", Run::Not(CONTAINERS)),
    ("cri", Run::Not(CONTAINERS)),
    (
        "deploy",
        Run::Not("builds and runs the container image with podman; checks manifests with helm and kubectl"),
    ),
    ("posture", Run::Not(CONTAINERS)),
    ("trace_containers", Run::Not(CONTAINERS)),
    ("net", Run::Not(NETWORK)),
    ("net_kernel", Run::Not(NETWORK)),
    ("tcp", Run::Not(NETWORK)),
    ("packet_drops", Run::Not(NETWORK)),
    ("trace", Run::Skipping(&[("syscall_counts_are_exact_and_match_strace_and_bpftrace", BPFTRACE)])),
];

pub fn guest_run(test_binary: &str) -> &'static Run {
    const WHOLE: Run = Run::Skipping(&[]);
    GUEST_TESTS.iter().find(|(name, _)| *name == test_binary).map_or(&WHOLE, |(_, run)| run)
}

/// Test binaries and single tests the guests leave out: (what, why).
pub fn not_run_in_guests() -> Vec<(String, &'static str)> {
    let mut list = Vec::new();
    for (binary, run) in GUEST_TESTS {
        match run {
            Run::Not(why) => list.push((format!("`{binary}`"), *why)),
            Run::Skipping(tests) => {
                list.extend(tests.iter().map(|(test, why)| (format!("`{binary}::{test}`"), *why)))
            }
        }
    }
    list
}

/// The cells a kernel is allowed to fail today, each with the reason; every other cell must pass
/// (or be skipped). A pattern ending in `*` covers every cell it prefixes.
pub struct Expectation {
    pub kernel: &'static str,
    pub known_failures: &'static [(&'static str, &'static str)],
}

const TOO_OLD: &str = "kernsight refuses kernels older than 6.2 (cgroup local storage); feature-probing fallbacks will lift this";
const NO_ROUTE: &str = "the guests have no network interface, so no default route for XDP to watch";
const SCHED_MUSL: &str =
    "agent/tests/sched.rs does not build for musl (`pthread_t` is a pointer there, not an integer)";

/// On a kernel the agent refuses: everything that starts it. (`cli` passes: it checks errors
/// that come before the kernel version.)
const REFUSED: &[(&str, &str)] = &[
    ("check", TOO_OLD),
    ("agent", TOO_OLD),
    ("ready", TOO_OLD),
    ("probe:*", TOO_OLD),
    ("v2:*", TOO_OLD),
    ("test:capabilities", TOO_OLD),
    ("test:oom", TOO_OLD),
    ("test:reliability", TOO_OLD),
    ("test:restart", TOO_OLD),
    ("test:sched", SCHED_MUSL),
    ("test:syscalls", TOO_OLD),
    ("test:top", TOO_OLD),
    ("test:trace", TOO_OLD),
    ("test:trace_oom", TOO_OLD),
];

pub const EXPECTATIONS: &[Expectation] = &[
    Expectation { kernel: "5.10", known_failures: REFUSED },
    Expectation { kernel: "6.1", known_failures: REFUSED },
    Expectation {
        kernel: "6.12",
        known_failures: &[
            ("ready", "the capabilities and net_xdp families do not attach, so /readyz stays 503"),
            (
                "probe:capabilities",
                "tracepoint capability:cap_capable is newer than 6.12 (no btf_trace_cap_capable)",
            ),
            ("probe:net_xdp", NO_ROUTE),
            ("test:capabilities", "the capabilities family does not attach on 6.12"),
            ("test:sched", SCHED_MUSL),
        ],
    },
];

/// Why `cell` may fail on `kernel`, if it may.
pub fn known_failure(kernel: &str, cell: &str) -> Option<&'static str> {
    let expectation = EXPECTATIONS.iter().find(|e| e.kernel == kernel)?;
    expectation.known_failures.iter().find(|(pattern, _)| matches(pattern, cell)).map(|(_, why)| *why)
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
        for expectation in EXPECTATIONS {
            assert!(super::super::download::KERNELS.iter().any(|k| k.name == expectation.kernel));
        }
        assert!(known_failure("5.10", "probe:syscalls").is_some());
        assert!(known_failure("5.10", "boot").is_none());
        assert!(known_failure("6.12", "probe:syscalls").is_none());
        assert!(known_failure("6.12", "probe:capabilities").is_some());
        assert!(known_failure("7.0", "boot").is_none());
    }

    #[test]
    fn unlisted_test_binaries_run_whole() {
        assert!(matches!(guest_run("oom"), Run::Skipping(skips) if skips.is_empty()));
        assert!(matches!(guest_run("cri"), Run::Not(_)));
    }
}
