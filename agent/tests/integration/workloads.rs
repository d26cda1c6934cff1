//! Workload identity from what kubelet writes into a CRI sandbox: pods run through containerd's
//! CRI with the labels and annotations kubelet copies from a Deployment's, a StatefulSet's, a
//! DaemonSet's, a Job's, a CronJob's, a static and a bare pod's spec; every container's series
//! carries its owner, and `kernsight_pod_info` has one series per pod to join on.

use std::{collections::BTreeSet, process::Command, time::Duration};

use crate::support::{
    self, Agent, BINARY, Sample, config_file, containerd::Containerd, parse, path_str, privileged, value,
};

const FAILED_OPENS: usize = 50;

/// (pod, own labels, sandbox annotations, expected kind, expected workload)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

const PODS: [Case; 8] = [
    (
        "web-7d4b9c8f6d-x2x9k",
        &[("app", "web"), ("pod-template-hash", "7d4b9c8f6d")],
        &[],
        "Deployment",
        "web",
    ),
    (
        "web-7d4b9c8f6d-q8w7e",
        &[("app", "web"), ("pod-template-hash", "7d4b9c8f6d")],
        &[],
        "Deployment",
        "web",
    ),
    (
        "db-0",
        &[
            ("app", "db"),
            ("controller-revision-hash", "db-6c9d8"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
        ],
        &[],
        "StatefulSet",
        "db",
    ),
    (
        "node-agent-q7w2x",
        &[("app", "node-agent"), ("controller-revision-hash", "5b8f9"), ("pod-template-generation", "1")],
        &[],
        "DaemonSet",
        "node-agent",
    ),
    (
        "migrate-h4k2p",
        &[("batch.kubernetes.io/job-name", "migrate"), ("job-name", "migrate")],
        &[],
        "Job",
        "migrate",
    ),
    (
        "backup-29012345-l9m3n",
        &[("batch.kubernetes.io/job-name", "backup-29012345"), ("job-name", "backup-29012345")],
        &[],
        "CronJob",
        "backup",
    ),
    (
        "etcd-static",
        &[("component", "etcd")],
        &[("kubernetes.io/config.source", "file")],
        "StaticPod",
        "etcd-static",
    ),
    ("debug", &[("app", "debug")], &[("kubernetes.io/config.source", "api")], "Pod", "debug"),
];

fn errors_of(samples: &[Sample], pod: &str) -> f64 {
    value(
        samples,
        "kernsight_syscall_errors_total",
        &[("pod", pod), ("syscall", "openat"), ("errno", "ENOENT")],
    )
}

#[test]
fn containers_carry_the_workload_their_pod_belongs_to() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let containerd = Containerd::start();
    let (_dir, config) = config_file(&format!(
        "[metadata]\ncri_socket = \"{}\"\npod_labels = [\"app\"]\n",
        path_str(containerd.socket())
    ));
    let agent = Agent::start(&["--config", path_str(&config)]);
    // Each container fails FAILED_OPENS opens at once, then one every 0.2 s (for `trace`).
    let script = format!(
        "i=0; while [ $i -lt {FAILED_OPENS} ]; do cat /nonexistent/kernsight 2>/dev/null; i=$((i+1)); done; \
         while true; do cat /nonexistent/kernsight 2>/dev/null; sleep 0.2; done"
    );
    let _pods: Vec<_> = PODS
        .iter()
        .enumerate()
        .map(|(i, (pod, labels, annotations, _, _))| {
            let uid = format!("00000000-0000-0000-0000-{i:012}");
            containerd.run_pod_with(
                pod,
                "shop",
                &uid,
                "main",
                &["/bin/sh", "-c", &script],
                labels,
                annotations,
            )
        })
        .collect();

    let samples = agent.scrape_until(Duration::from_secs(60), |samples| {
        let named = PODS.iter().filter(|(pod, ..)| errors_of(samples, pod) >= FAILED_OPENS as f64).count();
        if named == PODS.len() {
            Ok(())
        } else {
            Err(format!("{named} of {} pods counted and named", PODS.len()))
        }
    });
    for (pod, _, _, kind, workload) in PODS {
        let labels = [("pod", pod), ("workload_kind", kind), ("workload", workload), ("syscall", "openat")];
        assert!(
            value(&samples, "kernsight_syscall_errors_total", &labels) >= FAILED_OPENS as f64,
            "{pod}: not counted as {kind} {workload}; its series: {:?}",
            samples
                .iter()
                .filter(|s| s.labels.get("pod").is_some_and(|p| p == pod))
                .take(1)
                .collect::<Vec<_>>()
        );
        let info = [("namespace", "shop"), ("pod", pod), ("workload_kind", kind), ("workload", workload)];
        assert_eq!(value(&samples, "kernsight_pod_info", &info), 1.0, "{pod}: kernsight_pod_info");
    }
    // One info series per pod, whatever the number of its containers and series.
    let info_series = samples.iter().filter(|s| s.name == "kernsight_pod_info").count();
    assert_eq!(info_series, PODS.len());
    // The Deployment's two pods aggregate under one workload.
    let web: f64 = samples
        .iter()
        .filter(|s| s.name == "kernsight_syscall_errors_total")
        .filter(|s| s.labels.get("workload").is_some_and(|w| w == "web"))
        .filter(|s| s.labels.get("syscall").is_some_and(|c| c == "openat"))
        .map(|s| s.value)
        .sum();
    assert!(web >= 2.0 * FAILED_OPENS as f64, "the Deployment's pods: {web}");
    let again = parse(&agent.scrape());
    assert_eq!(value(&again, "kernsight_pod_info", &[("pod", "debug"), ("label_app", "debug")]), 1.0);

    // `trace --workload`: the events of both of the Deployment's pods, and only theirs.
    let out = Command::new(BINARY)
        .args(["trace", "open", "--workload", "web", "--cri-socket", path_str(containerd.socket())])
        .args(["-o", "json", "--duration", "3s"])
        .output()
        .expect("kernsight trace");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let pods: BTreeSet<String> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .map(|event| event["pod"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: BTreeSet<String> =
        ["web-7d4b9c8f6d-x2x9k", "web-7d4b9c8f6d-q8w7e"].map(String::from).into();
    assert_eq!(pods, expected, "{stdout}\n{stderr}");
    let out = Command::new(BINARY)
        .args(["trace", "open", "--workload", "nope", "--cri-socket", path_str(containerd.socket())])
        .args(["--duration", "1s"])
        .output()
        .expect("kernsight trace");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running container matches --workload nope"));
}
