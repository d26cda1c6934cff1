//! `kernsight trace --container`: a real podman container, selected by name, its cgroup filtered
//! in the kernel, and each event labelled with the container's name.

use std::{
    io::Read as _,
    process::{Command, Stdio},
};

use crate::support::{BINARY, podman::PodmanContainer, privileged, serial};

fn trace(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BINARY)
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kernsight trace");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut stdout));
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    let ok = child.wait().expect("wait").success();
    (ok, stdout, stderr)
}

#[test]
fn container_filter_selects_only_that_containers_events_and_names_them() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let name = format!("kernsight-trace-{}", std::process::id());
    // A failing openat (ENOENT) five times a second, for as long as the container runs.
    let script = "while true; do read x < /kernsight-trace-missing 2>/dev/null; sleep 0.2; done";
    let container = PodmanContainer::start(&name, &[], &["/bin/sh", "-c", script]);
    let (ok, stdout, stderr) = trace(&["open", "--container", &name, "-o", "json", "--duration", "3s"]);
    assert!(ok, "{stderr}");
    let events: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(events.len() >= 5, "about 15 opens in 3 s: {stdout}\n{stderr}");
    for event in &events {
        assert_eq!(event["container"], name.as_str(), "only the container's events: {event}");
        assert_eq!(event["path"], "/kernsight-trace-missing", "{event}");
        assert_eq!(event["errno"], "ENOENT", "{event}");
        assert_eq!(event["ret"], -2, "{event}");
    }
    // By id prefix: the same container.
    let (ok, stdout, stderr) =
        trace(&["open", "--container", &container.id[..12], "-o", "json", "--duration", "1s"]);
    assert!(ok, "{stderr}");
    assert!(stdout.lines().count() >= 1 && stdout.lines().all(|l| l.contains(&name)), "{stdout}\n{stderr}");
    // A container that does not run: an error naming the ones that do.
    let (ok, _, stderr) = trace(&["open", "--container", "no-such-container", "--duration", "1s"]);
    assert!(!ok);
    assert!(stderr.contains("no running container matches --container no-such-container"), "{stderr}");
    assert!(stderr.contains(&name), "lists what runs: {stderr}");
}
