//! The harness's own promise: what a test creates is removed when it fails half-way, by the
//! `Drop` of the guard that holds it (containerd has its own proof, in `cri::`).

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    net_support::Link,
    support::{
        Agent, ChildGuard, TestCgroup,
        memory::{self, MIB},
        podman::{self, PodmanContainer},
        privileged, serial, spawn_in,
    },
};

/// What the failed test had made, to look for afterwards.
struct Made {
    agent_pid: i32,
    pin_dir: PathBuf,
    cgroups: Vec<PathBuf>,
    pids: Vec<i32>,
    namespaces: Vec<PathBuf>,
    container: String,
}

/// Holds 4 MiB and waits to be killed, as an OOM test's hog does.
fn hold_memory() -> i32 {
    memory::touch_anonymous(4 * MIB as usize);
    loop {
        // SAFETY: waits for a signal.
        unsafe { libc::pause() };
    }
}

fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

#[test]
fn a_test_that_fails_half_way_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let mut made = None;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let agent = Agent::start(&[]);
        // A cgroup tree with a process in a child, and a limited memory cgroup (v1 where memory
        // is a v1 controller) with a hog in a child: the shape of the OOM tests.
        let cgroup = TestCgroup::create("harness");
        let nested = cgroup.child("nested");
        let limited = memory::limited_cgroup("harness-memory");
        let hog = limited.child("hog");
        let pids = vec![spawn_in(&nested.path, hold_memory), spawn_in(&hog.path, hold_memory)];
        let link = Link::create();
        let name = format!("kernsight-harness-{}", std::process::id());
        let _container = PodmanContainer::start(&name, &[], &["sleep", "300"]);
        let tracer = ChildGuard(Command::new("sleep").arg("300").spawn().expect("sleep"));
        made = Some(Made {
            agent_pid: agent.pid() as i32,
            pin_dir: agent.pin_dir().expect("the agent's own pin directory").to_owned(),
            cgroups: vec![cgroup.path.clone(), nested.path.clone(), limited.path.clone(), hog.path.clone()],
            pids: pids.into_iter().chain([tracer.id() as i32]).collect(),
            namespaces: [&link.a, &link.b].map(|ns| PathBuf::from(ns.path())).to_vec(),
            container: name.clone(),
        });
        assert!(made.as_ref().is_some_and(|m| m.pids.iter().all(|&pid| running(pid))));
        assert!(podman::exists(&name), "the container runs");
        panic!("a failed assertion, half-way through (deliberate)");
    }));
    assert!(outcome.is_err(), "the test body panicked");
    let made = made.expect("the test body made everything before it failed");

    assert!(!running(made.agent_pid), "the agent {} still runs", made.agent_pid);
    assert!(!made.pin_dir.exists(), "{} is left", made.pin_dir.display());
    for cgroup in &made.cgroups {
        assert!(!cgroup.exists(), "cgroup {} is left", cgroup.display());
    }
    for &pid in &made.pids {
        assert!(!running(pid), "process {pid} still runs");
    }
    for namespace in &made.namespaces {
        assert!(!Path::new(namespace).exists(), "network namespace {} is left", namespace.display());
    }
    assert!(!podman::exists(&made.container), "container {} is left", made.container);
}
