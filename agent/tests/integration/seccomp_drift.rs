//! Seccomp drift from real podman + runc containers: a container without seccomp that calls what
//! podman's default profile denies shows those calls under `profile="runtime-default"`, exactly;
//! the same program under the default profile shows none, and the kernel fails its calls (EPERM,
//! or the profile's ENOSYS for a syscall it does not name), as the embedded profile says.

use std::{path::Path, time::Duration};

use crate::support::{
    self, Agent, Sample, config_file, containerd::Containerd, path_str, podman::PodmanContainer, privileged,
    value,
};

/// Calls of each syscall the program makes.
const CALLS: usize = 40;

/// `add_key` (never allowed by the profile), `bpf` (allowed only with CAP_SYS_ADMIN) and
/// `keyctl` (allowed), CALLS times each, through raw syscalls; then one line per syscall with
/// how many failed with EPERM or ENOSYS (what the profile's filter returns: EPERM for the
/// syscalls it denies by name, ENOSYS for those it does not name) and how many did not, and
/// idle so that the agent can name the container.
const PROGRAM: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

static void report(const char *name, long calls, long (*call)(void)) {
    long ok = 0, eperm = 0, enosys = 0, other = 0;
    for (long i = 0; i < calls; i++) {
        long r = call();
        if (r >= 0) ok++;
        else if (errno == EPERM) eperm++;
        else if (errno == ENOSYS) enosys++;
        else other++;
    }
    printf("%s eperm=%ld enosys=%ld ok+other=%ld\n", name, eperm, enosys, ok + other);
}
/* KEY_SPEC_PROCESS_KEYRING: the key dies with the process. */
static long add_key(void) { return syscall(SYS_add_key, "user", "kernsight-test", "x", 1, -2); }
static long bpf(void) { char attr[128] = {0}; return syscall(SYS_bpf, 0, attr, sizeof attr); }
/* KEYCTL_GET_KEYRING_ID of the process keyring, created if need be. */
static long keyctl(void) { return syscall(SYS_keyctl, 0, -2, 1); }

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 0;
    report("add_key", calls, add_key);
    report("bpf", calls, bpf);
    report("keyctl", calls, keyctl);
    fflush(stdout);
    sleep(120);
    return 0;
}
"#;

/// Runs the program in a container with `flags`, waits for its report.
fn run(name: &str, flags: &[&str], program: &Path) -> (PodmanContainer, String) {
    let mount = format!("{}:/drift:ro", program.display());
    let mut all = vec!["-v", mount.as_str()];
    all.extend_from_slice(flags);
    let container = PodmanContainer::start(name, &all, &["/drift", &CALLS.to_string()]);
    let report = support::eventually(Duration::from_secs(30), || {
        let logs = container.logs();
        if logs.contains("keyctl eperm=") { Ok(logs) } else { Err(format!("no report yet: {logs:?}")) }
    });
    (container, report)
}

fn outside(samples: &[Sample], container: &str) -> Vec<(String, f64)> {
    samples
        .iter()
        .filter(|s| {
            s.name == "kernsight_syscalls_outside_profile_total"
                && s.labels.get("container").is_some_and(|c| c == container)
        })
        .map(|s| (format!("{}/{}", s.labels["profile"], s.labels["syscall"]), s.value))
        .collect()
}

#[test]
fn unconfined_container_shows_what_the_runtime_default_would_deny() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(program) = support::static_c_program(dir.path(), "drift", PROGRAM) else { return };
    let _serial = support::serial();
    let (_config_dir, config) = config_file("[security]\nseccomp_drift = true\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let pid = std::process::id();

    let unconfined_name = format!("kernsight-drift-{pid}-unconfined");
    let (_unconfined, report) = run(&unconfined_name, &["--security-opt", "seccomp=unconfined"], &program);
    // Without a filter, the calls reach the syscalls themselves (bpf refuses for want of CAP_BPF).
    assert!(report.contains(&format!("add_key eperm=0 enosys=0 ok+other={CALLS}")), "{report}");
    assert!(report.contains(&format!("keyctl eperm=0 enosys=0 ok+other={CALLS}")), "{report}");

    let confined_name = format!("kernsight-drift-{pid}-default");
    let (_confined, report) = run(&confined_name, &[], &program);
    // Under podman's default profile, the calls the embedded copy denies fail: add_key, which
    // it does not name, with its defaultErrnoRet (ENOSYS); bpf, denied by name without
    // CAP_SYS_ADMIN, with EPERM.
    assert!(report.contains(&format!("add_key eperm=0 enosys={CALLS} ok+other=0")), "{report}");
    assert!(report.contains(&format!("bpf eperm={CALLS} enosys=0 ok+other=0")), "{report}");
    assert!(report.contains(&format!("keyctl eperm=0 enosys=0 ok+other={CALLS}")), "{report}");

    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let drift = outside(samples, &unconfined_name);
        let errors = value(
            samples,
            "kernsight_syscall_errors_total",
            &[("container", &confined_name), ("syscall", "add_key"), ("errno", "ENOSYS")],
        );
        if drift.len() >= 2 && errors >= CALLS as f64 {
            Ok(())
        } else {
            Err(format!("drift of {unconfined_name}: {drift:?}; add_key ENOSYS of {confined_name}: {errors}"))
        }
    });
    let calls = CALLS as f64;
    let mut drift = outside(&samples, &unconfined_name);
    drift.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        drift,
        [("runtime-default/add_key".to_owned(), calls), ("runtime-default/bpf".to_owned(), calls)],
        "keyctl is allowed by the profile and the runtime's own syscalls are all allowed"
    );
    assert_eq!(outside(&samples, &confined_name), [], "a container under a profile is not compared");
    // The kernel's answer under the profile, seen by the syscall counters.
    for (syscall, errno) in [("add_key", "ENOSYS"), ("bpf", "EPERM")] {
        let labels = [("container", confined_name.as_str()), ("syscall", syscall), ("errno", errno)];
        assert_eq!(value(&samples, "kernsight_syscall_errors_total", &labels), calls, "{syscall}");
    }
}

/// Calls of `sync` the baseline pod makes (busybox's `sync` applet: one sync(2) each).
const SYNCS: usize = 25;

#[test]
fn a_deployment_held_to_a_baseline_shows_what_it_would_deny() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let containerd = Containerd::start();
    let dir = tempfile::tempdir().unwrap();
    // The baseline allows everything but sync(2).
    let baseline = dir.path().join("web-baseline.json");
    std::fs::write(
        &baseline,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sync"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let unreadable = dir.path().join("missing.json");
    let (_config_dir, config) = config_file(&format!(
        "[metadata]\ncri_socket = \"{}\"\n[security]\nseccomp_baselines = [\
         {{ namespace = \"shop\", workload = \"web\", profile = \"{}\" }}, \
         {{ namespace = \"shop\", workload = \"api\", profile = \"{}\" }}]\n",
        path_str(containerd.socket()),
        path_str(&baseline),
        path_str(&unreadable),
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let script = format!("i=0; while [ $i -lt {SYNCS} ]; do sync; i=$((i+1)); done; sleep 120");
    let labels = [("app", "web"), ("pod-template-hash", "7d4b9c8f6d")];
    let _pod = containerd.run_pod_with(
        "web-7d4b9c8f6d-x2x9k",
        "shop",
        "00000000-0000-0000-0000-00000000d1f7",
        "main",
        &["/bin/sh", "-c", &script],
        &labels,
        &[],
    );
    let drift =
        [("namespace", "shop"), ("workload", "web"), ("profile", "web-baseline"), ("syscall", "sync")];
    let samples = agent.scrape_until(Duration::from_secs(60), |samples| {
        let seen = value(samples, "kernsight_syscalls_outside_profile_total", &drift);
        if seen >= SYNCS as f64 { Ok(()) } else { Err(format!("{seen} sync calls outside web-baseline")) }
    });
    assert_eq!(value(&samples, "kernsight_syscalls_outside_profile_total", &drift), SYNCS as f64);
    // Nothing else the pod did is outside a profile that allows everything else.
    let baseline_series: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == "kernsight_syscalls_outside_profile_total" && s.labels["profile"] == "web-baseline"
        })
        .collect();
    assert_eq!(baseline_series.len(), 1, "{baseline_series:?}");
    // The unreadable baseline is named once, and the agent runs on.
    let log = agent.log();
    assert!(
        log.contains("security.seccomp_baselines")
            && log.contains("missing.json")
            && log.contains("shop/api"),
        "{log}"
    );
    assert!(agent.alive());
}
