//! Attribution of syscalls made inside real containers: podman + runc (named through conmon) and
//! a pod run through containerd's CRI (namespace, pod and container names from the runtime).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{
    self, Agent, BINARY, ChildGuard, Sample, config_file, containerd::Containerd, eventually, parse,
    path_str, podman::PodmanContainer, privileged, spawn_in, value, wait_status,
};

/// Inside the container: exactly FAILED_OPENS failing `openat` (busybox `read` of a missing
/// file), then idle so that the runtime still knows the container when the agent asks.
const FAILED_OPENS: usize = 500;
fn workload_script() -> String {
    format!(
        "i=0; while [ $i -lt {FAILED_OPENS} ]; do read x < /kernsight-missing 2>/dev/null; i=$((i+1)); done; sleep 120"
    )
}

/// Scrapes until a series of `labels` has at least `at_least` ENOENT openat calls (30 s at most).
fn wait_for_errors(agent: &Agent, labels: &[(&str, &str)], at_least: f64) -> Vec<Sample> {
    let mut labels = labels.to_vec();
    labels.extend([("syscall", "openat"), ("errno", "ENOENT")]);
    agent.scrape_until(Duration::from_secs(30), |samples| {
        let seen = value(samples, "kernsight_syscall_errors_total", &labels);
        if seen >= at_least {
            return Ok(());
        }
        let enoent: Vec<String> = samples
            .iter()
            .filter(|s| {
                s.name == "kernsight_syscall_errors_total"
                    && s.labels.get("errno").is_some_and(|e| e == "ENOENT")
            })
            .map(|s| format!("{:?} {}", s.labels, s.value))
            .collect();
        Err(format!("no series {labels:?} with {at_least} calls; saw {seen}. Series:\n{}", enoent.join("\n")))
    })
}

/// A container of the test image running `script` in its shell, with `flags` for `podman run`.
fn run_script(name: &str, flags: &[&str], script: &str) -> PodmanContainer {
    PodmanContainer::start(name, flags, &["/bin/sh", "-c", script])
}

#[test]
fn podman_container_syscalls_carry_its_name_and_id() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file("[metadata]\ncontainer_id_label = true\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let name = format!("kernsight-test-{}", std::process::id());
    let container = run_script(&name, &[], &workload_script());

    wait_for_errors(&agent, &[("container", &name)], FAILED_OPENS as f64);
    // A scrape reads the call counters before the errors: the one that saw the last error may
    // have read the calls while the loop still ran. The loop is over now.
    let samples = parse(&agent.scrape());
    let labels =
        [("container", name.as_str()), ("container_id", container.id.as_str()), ("syscall", "openat")];
    assert!(value(&samples, "kernsight_syscalls_total", &labels) >= FAILED_OPENS as f64);
    let series: Vec<&Sample> =
        samples.iter().filter(|s| s.labels.get("container").is_some_and(|c| *c == name)).collect();
    // Named by podman, not by a CRI: no pod, and no cgroup path (empty labels are left out).
    assert!(!series.is_empty());
    assert!(series.iter().all(|s| !s.labels.contains_key("cgroup") && !s.labels.contains_key("pod")));
    // A fresh scrape: the lookup counters are encoded before the series, so the scrape that first
    // shows the name may still show the counters from just before the lookup.
    let after = agent.scrape();
    let found = value(
        &parse(&after),
        "kernsight_metadata_lookups_total",
        &[("source", "conmon"), ("result", "found")],
    );
    assert!(
        found >= 1.0,
        "{}",
        after.lines().filter(|l| l.starts_with("kernsight_metadata")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn cri_pod_syscalls_carry_namespace_pod_and_container() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let containerd = Containerd::start();
    let (_dir, config) = config_file(&format!(
        "[metadata]\ncri_socket = \"{}\"\ncontainer_id_label = true\npod_labels = [\"app\"]\n",
        path_str(containerd.socket())
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let pod = containerd.run_pod(
        "web-0",
        "shop",
        "11111111-2222-3333-4444-555555555555",
        "nginx",
        &["/bin/sh", "-c", &workload_script()],
    );

    // The harness gives the pod sandbox the label app=<pod name>, as a Deployment would.
    let labels = [("namespace", "shop"), ("pod", "web-0"), ("container", "nginx"), ("label_app", "web-0")];
    let samples = wait_for_errors(&agent, &labels, FAILED_OPENS as f64);
    let with_id = [("container_id", pod.container_id.as_str()), ("syscall", "openat"), ("errno", "ENOENT")];
    assert!(value(&samples, "kernsight_syscall_errors_total", &with_id) >= FAILED_OPENS as f64);
    let after = parse(&agent.scrape());
    assert!(
        value(&after, "kernsight_metadata_lookups_total", &[("source", "cri"), ("result", "found")]) >= 1.0
    );
    assert!(agent.log().contains("pod identity from the CRI"), "{}", agent.log());
}

#[test]
fn without_a_runtime_socket_containers_are_named_by_id_and_the_log_says_why() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file(
        "[metadata]\ncri_socket = \"/nonexistent/kernsight/cri.sock\"\ncontainer_id_label = true\n",
    );
    let agent = Agent::start(&["--config", path_str(&config)]);
    // A container no source can name: a cgroup named as containerd's cgroupfs driver names one.
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xfeed);
    let root = support::unified_root();
    let pod = support::TestCgroup::create_in(&root, "kubepods");
    let path = pod.path.join(format!("besteffort/pod11111111-2222-3333-4444-555555555555/{id}"));
    std::fs::create_dir_all(&path).unwrap();
    // The whole tree goes with `pod`.
    let pid = spawn_in(&path, || {
        support::failing_openat_times(FAILED_OPENS);
        0
    });
    assert_eq!(wait_status(pid), 0, "the workload in {} exits with status 0", path.display());
    let samples =
        wait_for_errors(&agent, &[("container", &id[..12]), ("container_id", &id)], FAILED_OPENS as f64);
    assert!(samples.iter().any(|s| s.labels.get("container_id").is_some_and(|c| *c == id)));
    drop(pod);
    let log = agent.log();
    assert_eq!(log.matches("no CRI socket found").count(), 1, "said once:\n{log}");
    assert!(log.contains("/nonexistent/kernsight/cri.sock"), "{log}");
}

/// What the limits test's shell holds in a variable: 8 MiB of anon memory.
const HELD_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

#[test]
fn podman_limits_and_throttling_show_in_container_metrics() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let name = format!("kernsight-test-{}-limits", std::process::id());
    // Half a CPU and 64 MiB, and a shell loop that wants a whole CPU: throttled every period. The
    // shell first holds 8 MiB of heap in a variable: anon memory that reclaim cannot free, and
    // large enough that the kernel's batched memory.stat shows it (a bare shell's few pages may
    // read as 0 there).
    let busy = "x=$(yes aaaaaaaaaaaaaaa | head -c 8388608); while true; do :; done";
    let _container = run_script(&name, &["--memory", "64m", "--cpus", "0.5"], busy);
    let labels = [("container", name.as_str())];
    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let periods = value(samples, "kernsight_container_cpu_throttled_periods_total", &labels);
        let held = value(samples, "kernsight_container_memory_unreclaimable_bytes", &labels);
        if periods >= 3.0 && held >= HELD_BYTES {
            Ok(())
        } else {
            Err(format!("{periods} throttled periods of {name}, {held} bytes unreclaimable"))
        }
    });
    let limit = [("container", name.as_str()), ("limit", "max")];
    assert_eq!(value(&samples, "kernsight_container_memory_limit_bytes", &limit), 64.0 * 1024.0 * 1024.0);
    assert_eq!(value(&samples, "kernsight_container_cpu_quota_seconds", &labels), 0.05);
    assert_eq!(value(&samples, "kernsight_container_cpu_period_seconds", &labels), 0.1);
    assert!(value(&samples, "kernsight_container_cpu_throttled_seconds_total", &labels) > 0.0);
    assert!(value(&samples, "kernsight_container_cpu_usage_seconds_total", &labels) > 0.0);
    assert!(value(&samples, "kernsight_container_memory_usage_bytes", &labels) > 0.0);
    assert!(value(&samples, "kernsight_container_pids", &labels) >= 1.0);

    // top's HEADROOM% is the share of the 64 MiB that reclaim could still free: the exported
    // unreclaimable memory (the shell's 8 MiB string and a little more) next to the limit.
    let unreclaimable = value(&samples, "kernsight_container_memory_unreclaimable_bytes", &labels);
    let expected = 100.0 * (64.0 * 1024.0 * 1024.0 - unreclaimable) / (64.0 * 1024.0 * 1024.0);
    let address = agent.address.to_string();
    let out = Command::new(support::BINARY)
        .args([
            "top",
            "--once",
            "--agent",
            &address,
            "--interval",
            "1s",
            "--sort",
            "HEADROOM%",
            "--limit",
            "1000",
        ])
        .output()
        .expect("run kernsight top");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    let column =
        header.iter().position(|h| *h == "HEADROOM%").unwrap_or_else(|| panic!("no HEADROOM%: {table}"));
    let headroom: f64 = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(2) == Some(&name.as_str()))
        .and_then(|cells| cells.get(column).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no HEADROOM% for {name}: {table}"));
    eprintln!(
        "top: HEADROOM% {headroom} for {name}; from the scrape before: {expected:.1} ({unreclaimable} bytes)"
    );
    assert!(unreclaimable < 32.0 * 1024.0 * 1024.0 && headroom < 88.0 && headroom > 50.0, "{table}");
    // The scrapes are seconds apart: the shell's memory barely moves (1 % is 640 KiB).
    assert!((headroom - expected).abs() < 1.0, "top {headroom}, scrape {expected}: {table}");

    // inspect sees the same throttling, and more of it a moment later.
    let throttled = || {
        let out = Command::new(support::BINARY).args(["inspect", &name, "-o", "json"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        let resources = &report["resources"];
        (
            resources["cpu_throttled_periods"].as_u64().unwrap_or(0),
            resources["cpu_throttled_seconds"].as_f64().unwrap_or(0.0),
        )
    };
    let (periods, seconds) = throttled();
    assert!(periods >= 3 && seconds > 0.0, "inspect: {periods} throttled periods, {seconds} s");
    // Throttling keeps growing under a busy loop.
    eventually(Duration::from_secs(10), || match throttled() {
        (later_periods, later_seconds) if later_periods > periods && later_seconds > seconds => Ok(()),
        later => Err(format!("throttled (periods, seconds): {later:?}, was ({periods}, {seconds})")),
    });
}

#[test]
fn inspect_shows_what_podman_was_given() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let name = format!("kernsight-test-{}-inspect", std::process::id());
    let flags = [
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pid",
        "host",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
    ];
    let container = run_script(&name, &flags, "sleep 120");
    let out = Command::new(support::BINARY)
        .args(["inspect", &name, "-o", "json"])
        .output()
        .expect("kernsight inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["container_name"], name.as_str());
    assert_eq!(report["container_id"], container.id.as_str());
    let resources = &report["resources"];
    assert_eq!(resources["memory_limit_bytes"], 64 * 1024 * 1024);
    assert_eq!(resources["cpu_quota_seconds"], 0.05);
    assert_eq!(resources["cpu_period_seconds"], 0.1);
    assert_eq!(report["namespaces"]["pid"]["host"], true, "--pid host");
    assert_eq!(report["namespaces"]["net"]["host"], false);
    let process = &report["processes"][0];
    assert_eq!(process["capabilities"]["effective"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(process["seccomp"], "filter", "podman's default seccomp profile");

    // The text view carries the same facts for a human.
    let text = Command::new(support::BINARY).args(["inspect", &container.id[..12]]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("of 64.0 MiB") && text.contains("0.50 CPUs"), "{text}");

    let unknown = Command::new(support::BINARY).args(["inspect", "no-such-container"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("name a pid, a container id"));
}

/// A process posing as conmon for `container_id` under `claimed_name`, run as `uid` from a copy
/// of perl named `conmon` in `dir` with the mode `exe_mode`. (`/bin/sleep` refuses conmon's
/// flags; `perl -c <file>` runs the `BEGIN` block of the file named by the id, here a sleep, and
/// leaves the rest of the command line alone.)
fn fake_conmon(dir: &Path, uid: u32, exe_mode: u32, container_id: &str, claimed_name: &str) -> ChildGuard {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod the directory");
    let exe = dir.join("conmon");
    std::fs::copy("/usr/bin/perl", &exe).expect("copy perl");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(exe_mode)).expect("chmod the copy");
    std::fs::write(dir.join(container_id), "BEGIN { sleep 600 }\n").expect("write the sleeper");
    let uid = uid.to_string();
    let child = Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--", "./conmon", "-c", container_id])
        .args(["-n", claimed_name])
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start setpriv");
    let guard = ChildGuard(child);
    let cmdline = format!("/proc/{}/cmdline", guard.id());
    eventually(Duration::from_secs(10), || {
        let seen = std::fs::read(&cmdline).unwrap_or_default();
        if seen.starts_with(b"./conmon\0-c\0") {
            Ok(())
        } else {
            Err(format!("the fake conmon runs as {:?}", String::from_utf8_lossy(&seen)))
        }
    });
    guard
}

#[test]
fn processes_posing_as_conmon_rename_nothing() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let name = format!("kernsight-test-{}-real", std::process::id());
    // One failing open a second, for as long as the test needs.
    let container =
        run_script(&name, &[], "while true; do read x < /kernsight-missing 2>/dev/null; sleep 1; done");
    // Both impostors run before the agent starts, so its first lookup of the container meets
    // them, after the runtime's conmon (a later pid: a believed impostor would win).
    let (nobody_dir, writable_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spoofed = "kube-system_trusted-agent";
    let writable = "kube-system_writable-binary";
    let _nobody = fake_conmon(nobody_dir.path(), 65534, 0o755, &container.id, spoofed);
    let _root_writable = fake_conmon(writable_dir.path(), 0, 0o777, &container.id, writable);

    let agent = Agent::start(&[]);
    wait_for_errors(&agent, &[("container", &name)], 2.0);
    let samples = parse(&agent.scrape());
    let renamed: Vec<String> = samples
        .iter()
        .filter(|s| s.labels.get("container").is_some_and(|c| c == spoofed || c == writable))
        .map(|s| format!("{} {:?}", s.name, s.labels))
        .collect();
    assert!(renamed.is_empty(), "an impostor named the container: {renamed:#?}");
    let refused = value(&samples, "kernsight_metadata_untrusted_total", &[("source", "conmon")]);
    assert!(refused >= 2.0, "both impostors were met and refused: {refused}");

    // audit as root, and with the DaemonSet's capabilities (no CAP_SYS_PTRACE: conmon's `exe`
    // cannot be followed, its absolute argv[0] is judged instead).
    for bounding in ["+all", "-all,+bpf,+perfmon"] {
        let audit = Command::new("setpriv")
            .args(["--bounding-set", bounding, BINARY, "audit", "-o", "json", &container.id])
            .output()
            .expect("setpriv kernsight audit");
        assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
        let audited: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit -o json");
        assert_eq!(audited[0]["name"], name.as_str(), "bounding set {bounding}: {audited}");
    }
}

/// The CRI error counter in a scrape.
fn cri_errors(samples: &[Sample]) -> f64 {
    value(samples, "kernsight_metadata_lookups_total", &[("source", "cri"), ("result", "error")])
}

#[test]
fn a_directory_at_the_first_candidate_socket_is_passed_over() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let containerd = Containerd::start();
    // What a hostPath mount of a socket that did not exist when the pod started leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let directory = dir.path().join("containerd.sock");
    std::fs::create_dir(&directory).unwrap();
    let (_config_dir, config) = config_file(&format!(
        "[metadata]\ncri_socket_candidates = [\"{}\", \"{}\"]\n",
        path_str(&directory),
        path_str(containerd.socket())
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    let _pod = containerd.run_pod(
        "web-1",
        "shop",
        "11111111-2222-3333-4444-666666666666",
        "nginx",
        &["/bin/sh", "-c", &workload_script()],
    );
    let samples =
        wait_for_errors(&agent, &[("namespace", "shop"), ("pod", "web-1"), ("container", "nginx")], 1.0);
    assert_eq!(cri_errors(&samples), 0.0, "the directory is not tried, the socket answers");
    let log = agent.log();
    let connected = log.lines().find(|l| l.contains("pod identity from the CRI")).unwrap_or_default();
    assert!(connected.contains(path_str(containerd.socket())), "{log}");
}

#[test]
fn sockets_that_refuse_or_hang_count_as_lookup_errors() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let dir = tempfile::tempdir().unwrap();
    // A socket whose listener is gone (a runtime that died): connections are refused.
    let refusing = dir.path().join("refusing.sock");
    drop(std::os::unix::net::UnixListener::bind(&refusing).unwrap());
    // A listener that never accepts (a hung runtime): the connection waits in its backlog and
    // the runtime's Version call times out.
    let hung = dir.path().join("hung.sock");
    let _hung_listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
    let (_config_dir, config) = config_file(&format!(
        "[metadata]\ncri_socket_candidates = [\"{}\", \"{}\"]\ncontainer_id_label = true\n",
        path_str(&refusing),
        path_str(&hung)
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    // At start: one error per socket tried.
    agent.scrape_until(Duration::from_secs(20), |samples| {
        let errors = cri_errors(samples);
        if errors >= 2.0 { Ok(()) } else { Err(format!("{errors} CRI lookup errors")) }
    });
    let log = agent.log();
    let said = log.lines().find(|l| l.contains("no CRI socket answered")).unwrap_or_default();
    for path in [&refusing, &hung] {
        assert!(said.contains(&format!("{} (a socket)", path_str(path))), "which paths were tried: {log}");
    }
    assert!(said.contains("Connection refused") && said.contains("did not answer"), "{said}");

    // While a container waits for its name, every retry counts again: the alert keeps firing.
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xcafe);
    let pod = support::TestCgroup::create_in(&support::unified_root(), "kubepods-cri");
    let path = pod.path.join(format!("besteffort/pod11111111-2222-3333-4444-777777777777/{id}"));
    std::fs::create_dir_all(&path).unwrap();
    let pid = spawn_in(&path, || {
        support::failing_openat_times(FAILED_OPENS);
        0
    });
    assert_eq!(wait_status(pid), 0, "the workload in {} exits with status 0", path.display());
    wait_for_errors(&agent, &[("container_id", &id)], FAILED_OPENS as f64);
    let before = cri_errors(&parse(&agent.scrape()));
    agent.scrape_until(Duration::from_secs(45), |samples| {
        let errors = cri_errors(samples);
        if errors >= before + 2.0 {
            Ok(())
        } else {
            Err(format!("{errors} CRI lookup errors, {before} before"))
        }
    });
    drop(pod);
}
