//! `kernsight advise`, proven on real podman + runc containers: a generated seccomp profile lets
//! the same workload run again and makes one extra syscall fail with EPERM; the capability
//! advice names exactly the capability a workload used.

use crate::support;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::support::{
    Agent, BINARY, ChildGuard, eventually,
    podman::{self, PodmanContainer},
    privileged, value,
};

/// Writes, reads and lists files: no `mkdir` (the extra syscall of the EPERM check).
const WORKLOAD: &str = "echo hello > /tmp/f; cat /tmp/f; ls / > /dev/null";
/// The same workload plus one `mkdir(2)` (busybox uses mkdir, not mkdirat).
const WORKLOAD_AND_MKDIR: &str = "echo hello > /tmp/f; cat /tmp/f; ls / > /dev/null; mkdir /tmp/extra";

fn name(tag: &str) -> String {
    format!("kernsight-advise-{}-{tag}", std::process::id())
}

fn kernsight(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).output().expect("kernsight")
}

fn spawn_kernsight(args: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new(BINARY)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kernsight"),
    )
}

/// The output of a `spawn_kernsight` child, once it exited.
fn wait_output(mut child: ChildGuard) -> Output {
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_end(&mut stdout).expect("read kernsight's stdout");
    }
    Output { status: child.wait().expect("wait for kernsight"), stdout, stderr: Vec::new() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes the profile, checks its shape, and proves it: the workload runs under it, the
/// workload plus a mkdir gets EPERM from mkdir, and that mkdir works without the profile.
fn prove_profile(profile: &str, tag: &str) {
    let json: serde_json::Value = serde_json::from_str(profile).expect("a JSON profile");
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
    let names: Vec<&str> = json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()))
        .collect();
    for seen in ["openat", "write", "getdents64", "execve", "exit_group"] {
        assert!(names.contains(&seen), "{seen} missing from {names:?}");
    }
    assert!(!names.contains(&"mkdir"), "mkdir was never made, yet allowed");
    let seen_rule: Vec<&str> =
        json["syscalls"][0]["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    let mut sorted = seen_rule.clone();
    sorted.sort_unstable();
    assert_eq!(seen_rule, sorted, "names are sorted");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.json");
    std::fs::write(&file, profile).unwrap();
    let seccomp = format!("seccomp={}", file.display());
    let (_same, out) = PodmanContainer::run_to_end(
        &name(&format!("{tag}-same")),
        &["--security-opt", &seccomp],
        &["sh", "-c", WORKLOAD],
    );
    assert!(out.status.success(), "the workload failed under its own profile: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");

    let (_extra, out) = PodmanContainer::run_to_end(
        &name(&format!("{tag}-extra")),
        &["--security-opt", &seccomp],
        &["sh", "-c", WORKLOAD_AND_MKDIR],
    );
    assert!(!out.status.success(), "mkdir succeeded under a profile without it");
    assert_eq!(text(&out.stdout), "hello\n", "the workload itself still ran");
    assert!(
        text(&out.stderr).contains("mkdir: can't create directory '/tmp/extra': Operation not permitted"),
        "mkdir did not fail with EPERM: {}",
        text(&out.stderr)
    );
    let (_control, out) =
        PodmanContainer::run_to_end(&name(&format!("{tag}-control")), &[], &["sh", "-c", WORKLOAD_AND_MKDIR]);
    assert!(out.status.success(), "mkdir fails even without the profile: {}", text(&out.stderr));
}

#[test]
fn seccomp_profile_from_a_window_runs_the_workload_and_refuses_one_more_syscall() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    support::podman::load_image();
    let observed = name("observed");
    // The window opens first (advise says so once its programs are attached); the container
    // starts inside it and still runs at its end.
    let mut advise = spawn_kernsight(&["advise", "seccomp", "--container", &observed, "--for", "10s"]);
    let stderr = advise.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let opened = lines.by_ref().map_while(Result::ok).any(|line| line.contains("kernsight: observing"));
    assert!(opened, "advise never opened its window");
    let _container = PodmanContainer::start(&observed, &[], &["sh", "-c", &format!("{WORKLOAD}; sleep 300")]);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = wait_output(advise);
    assert!(out.status.success(), "advise failed: {}", rest.join("\n"));
    prove_profile(&text(&out.stdout), "window");
}

#[test]
fn seccomp_profile_from_a_window_after_the_start_needs_the_runtime_list() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // The container runs before the window opens: only the workload's own syscalls are seen,
    // the runtime's are the built-in list.
    let looping = name("loop");
    let _container = PodmanContainer::start(
        &looping,
        &[],
        &["sh", "-c", &format!("while true; do sh -c '{WORKLOAD}' > /dev/null; sleep 0.2; done")],
    );
    // The loop has started: its `sleep 0.2` runs (the runtime's setup is long over by then).
    eventually(Duration::from_secs(30), || {
        let top = podman::podman().args(["top", &looping, "args"]).output().expect("podman top");
        let top = text(&top.stdout);
        if top.contains("sleep 0.2") { Ok(()) } else { Err(format!("the container runs:\n{top}")) }
    });
    let out = kernsight(&["advise", "seccomp", "--container", &looping, "--for", "3s"]);
    assert!(out.status.success(), "advise failed: {}", text(&out.stderr));
    let profile = text(&out.stdout);
    assert!(
        !profile.contains("\"pivot_root\"") && !profile.contains("\"mount\""),
        "runtime setup seen: {profile}"
    );
    prove_profile(&profile, "late");
}

#[test]
fn seccomp_profile_from_the_running_agent() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let observed = name("agent");
    let _container = PodmanContainer::start(&observed, &[], &["sh", "-c", &format!("{WORKLOAD}; sleep 300")]);
    // The agent names the container through conmon; wait until its counts carry the name.
    agent.scrape_until(Duration::from_secs(30), |samples| {
        let labels = [("container", observed.as_str()), ("syscall", "getdents64")];
        let calls = value(samples, "kernsight_syscalls_total", &labels);
        if calls > 0.0 { Ok(()) } else { Err(format!("the agent shows no getdents64 of {observed}")) }
    });
    let address = agent.address.to_string();
    let out = kernsight(&["advise", "seccomp", "--container", &observed, "--agent", &address]);
    assert!(out.status.success(), "advise failed: {}", text(&out.stderr));
    let profile = text(&out.stdout);
    assert!(profile.contains("the counts of the agent at"), "{profile}");
    prove_profile(&profile, "agent");
}

#[test]
fn advise_refuses_bad_targets_and_empty_windows_with_a_clear_message() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let refused = |args: &[&str], says: &str| {
        let out = kernsight(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("kernsight: error:")).count(), 1, "{stderr}");
    };
    let unknown = name("no-such-container");
    refused(
        &["advise", "seccomp", "--container", &unknown],
        &format!("no running container matches `{unknown}`"),
    );
    refused(
        &["advise", "capabilities", "--container", &unknown, "--for", "1s"],
        "no running container matches",
    );

    // Exited: the container is known to podman but has no process left.
    let exited = name("exited");
    let (_gone, out) = PodmanContainer::run_to_end(&exited, &[], &["true"]);
    assert!(out.status.success());
    refused(
        &["advise", "seccomp", "--container", &exited, "--for", "1s"],
        "an exited container has no processes",
    );

    // A window in which the container made no syscall: sleep is blocked for all of it.
    let idle = name("idle");
    let _idle = PodmanContainer::start(&idle, &[], &["sleep", "300"]);
    refused(&["advise", "seccomp", "--container", &idle, "--for", "2s"], "no syscalls of container");

    refused(&["advise", "seccomp", "--pod", "nonamespace"], "is not a pod: write NAMESPACE/NAME");
    refused(
        &["advise", "seccomp", "--cgroup", "/kernsight-no-such-cgroup", "--for", "1s"],
        "does not exist under",
    );
    refused(&["advise", "seccomp", "--cgroup", "/x", "--for", "soon"], "is not a duration");
    refused(
        &["advise", "seccomp", "--container", &idle, "--agent", "127.0.0.1:1"],
        "cannot reach the kernsight agent",
    );
}

/// Binds port 80 over and over (busybox nc), as root.
const BIND_LOOP: &str = "while true; do nc -l -p 80 & p=$!; sleep 0.2; kill $p; done";

#[test]
fn capabilities_advice_names_net_bind_service_used_and_denied() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let allowed = name("bind");
    let dropped = name("bind-dropped");
    let _allowed = PodmanContainer::start(&allowed, &[], &["sh", "-c", BIND_LOOP]);
    let _dropped =
        PodmanContainer::start(&dropped, &["--cap-drop", "NET_BIND_SERVICE"], &["sh", "-c", BIND_LOOP]);

    // The agent's counters: granted in one, denied in the other.
    let checks = |samples: &[support::Sample], container: &str, result: &str| {
        value(
            samples,
            "kernsight_capability_checks_total",
            &[("container", container), ("cap", "CAP_NET_BIND_SERVICE"), ("result", result)],
        )
    };
    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let (granted, denied) = (checks(samples, &allowed, "granted"), checks(samples, &dropped, "denied"));
        if granted > 0.0 && denied > 0.0 {
            Ok(())
        } else {
            Err(format!("{granted} granted checks in {allowed}, {denied} denied in {dropped}"))
        }
    });
    assert!(checks(&samples, &allowed, "granted") > 0.0, "no granted check; log:\n{}", agent.log());
    assert_eq!(checks(&samples, &allowed, "denied"), 0.0);
    assert!(checks(&samples, &dropped, "denied") > 0.0, "no denied check");
    assert_eq!(checks(&samples, &dropped, "granted"), 0.0);

    // From the agent, which saw the containers start (runc's own checks while it set them up
    // are not counted), and from a window: exactly NET_BIND_SERVICE.
    let address = agent.address.to_string();
    let out = kernsight(&["advise", "capabilities", "--container", &allowed, "--agent", &address]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_agent = text(&out.stdout);
    assert!(from_agent.contains("# used (granted checks): NET_BIND_SERVICE\n"), "{from_agent}");
    assert!(from_agent.contains("    add:\n      - NET_BIND_SERVICE\n#"), "{from_agent}");
    let out = kernsight(&["advise", "capabilities", "--container", &allowed, "--for", "2s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let advice = text(&out.stdout);
    assert!(advice.contains("# used (granted checks): NET_BIND_SERVICE\n"), "{advice}");
    assert!(
        advice.contains(
            "securityContext:\n  capabilities:\n    drop:\n      - ALL\n    add:\n      - NET_BIND_SERVICE\n#"
        ),
        "{advice}"
    );
    let unused = advice.lines().find(|l| l.starts_with("# held but never used: ")).expect(&advice);
    assert!(
        unused.contains("CHOWN") && unused.contains("KILL") && !unused.contains("NET_BIND_SERVICE"),
        "{unused}"
    );

    let out = kernsight(&["advise", "capabilities", "--container", &dropped, "--for", "2s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let advice = text(&out.stdout);
    assert!(advice.contains("# used (granted checks): none\n"), "{advice}");
    assert!(
        advice.contains("refused; added so that those operations succeed): NET_BIND_SERVICE\n"),
        "{advice}"
    );
    assert!(advice.contains("    add:\n      - NET_BIND_SERVICE\n#"), "{advice}");
}

/// A host process's cgroup, by path: the profile lists what the test's own workload called.
#[test]
fn seccomp_profile_of_a_cgroup_lists_what_its_processes_called() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let cgroup = support::TestCgroup::create("advise");
    let mut advise = spawn_kernsight(&["advise", "seccomp", "--cgroup", &cgroup.label, "--for", "4s"]);
    let stderr = advise.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|line| line.contains("kernsight: observing")));
    let code = cgroup.run(|| {
        support::getppid_times(100);
        support::failing_openat_times(10);
        0
    });
    assert_eq!(code, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = wait_output(advise);
    assert!(out.status.success(), "advise failed: {}", rest.join("\n"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON profile");
    let seen: Vec<&str> =
        json["syscalls"][0]["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert!(seen.contains(&"getppid") && seen.contains(&"openat"), "{seen:?}");
    assert!(json["syscalls"][0]["comment"].as_str().unwrap().contains(&cgroup.label));
}

/// A pod run through containerd's CRI: `--pod NS/NAME` finds its containers through the CRI
/// socket in a window, and by the agent's namespace and pod labels otherwise.
#[test]
fn seccomp_profile_of_a_cri_pod_from_a_window_and_from_the_agent() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let containerd = support::containerd::Containerd::start();
    let socket = support::path_str(containerd.socket()).to_owned();
    let (_dir, config) = support::config_file(&format!("[metadata]\ncri_socket = \"{socket}\"\n"));
    let agent = Agent::start(&["--config", support::path_str(&config)]);
    let looping = format!("while true; do sh -c '{WORKLOAD}' > /dev/null; sleep 0.2; done");
    let pod = containerd.run_pod(
        "api-0",
        "advise",
        "22222222-3333-4444-5555-666666666666",
        "server",
        &["/bin/sh", "-c", &looping],
    );
    let labels = [("namespace", "advise"), ("pod", "api-0"), ("syscall", "getdents64")];
    agent.scrape_until(Duration::from_secs(30), |samples| {
        let calls = value(samples, "kernsight_syscalls_total", &labels);
        if calls > 0.0 { Ok(()) } else { Err("the agent never named the pod".into()) }
    });
    let address = agent.address.to_string();
    let from_agent = kernsight(&["advise", "seccomp", "--pod", "advise/api-0", "--agent", &address]);
    let from_window =
        kernsight(&["advise", "seccomp", "--pod", "advise/api-0", "--for", "2s", "--cri-socket", &socket]);
    for (how, out) in [("agent", from_agent), ("window", from_window)] {
        assert!(out.status.success(), "{how}: {}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON profile");
        let seen: Vec<&str> =
            json["syscalls"][0]["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
        for name in ["getdents64", "openat", "write"] {
            assert!(seen.contains(&name), "{how}: {name} missing from {seen:?}");
        }
        assert!(!seen.contains(&"mkdir"), "{how}: {seen:?}");
        assert!(json["syscalls"][0]["comment"].as_str().unwrap().contains("pod advise/api-0"), "{how}");
    }
    // By container id: this agent labels the container by its CRI name only, and says so.
    let by_id = kernsight(&["advise", "seccomp", "--container", &pod.container_id, "--agent", &address]);
    assert_eq!(by_id.status.code(), Some(1));
    assert!(text(&by_id.stderr).contains("metadata.container_id_label = true"), "{}", text(&by_id.stderr));
    let unknown =
        kernsight(&["advise", "seccomp", "--pod", "advise/nope", "--for", "1s", "--cri-socket", &socket]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("pod advise/nope has no running container"),
        "{}",
        text(&unknown.stderr)
    );
}
