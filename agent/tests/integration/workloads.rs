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

    // `trace --workload`: the events of both of the Deployment's pods, and only theirs, each
    // with its owner and the node.
    let out = Command::new(BINARY)
        .args(["trace", "open", "--workload", "web", "--cri-socket", path_str(containerd.socket())])
        .args(["-o", "json", "--duration", "3s"])
        .env("NODE_NAME", "node-under-test")
        .output()
        .expect("kernsight trace");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for event in &events {
        let fields = (&event["node"], &event["workload_kind"], &event["workload"]);
        assert_eq!(fields, (&"node-under-test".into(), &"Deployment".into(), &"web".into()), "{event}");
    }
    let pods: BTreeSet<String> =
        events.iter().map(|event| event["pod"].as_str().unwrap_or_default().to_owned()).collect();
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

    advise_merges_a_workloads_pods(&agent, path_str(containerd.socket()));
    audit_names_each_containers_workload(&containerd);
}

/// `advise --workload`: one profile from the syscalls of every container of the Deployment's
/// two pods, and of no other pod. The agent's counts grow while the test reads them, so the
/// workload's openat count lies between the sum of its pods' counts read before and after.
fn advise_merges_a_workloads_pods(agent: &Agent, cri_socket: &str) {
    use kernsight::advise::{Target, from_agent};
    let address = agent.address.to_string();
    let openat =
        |target: &Target| from_agent(&address, target).unwrap().syscalls.get("openat").copied().unwrap_or(0);
    let web_pods = ["web-7d4b9c8f6d-x2x9k", "web-7d4b9c8f6d-q8w7e"]
        .map(|pod| Target::pod(&format!("shop/{pod}")).unwrap());
    let before: u64 = web_pods.iter().map(openat).sum();
    let workload = openat(&Target::workload("shop/web").unwrap());
    let after: u64 = web_pods.iter().map(openat).sum();
    assert!(before >= 2 * FAILED_OPENS as u64, "{before}");
    assert!((before..=after).contains(&workload), "workload {workload}, its pods {before}..{after}");
    let union: BTreeSet<String> =
        web_pods.iter().flat_map(|p| from_agent(&address, p).unwrap().syscalls.into_keys()).collect();
    let merged = from_agent(&address, &Target::workload("web").unwrap()).unwrap().syscalls;
    assert!(union.iter().all(|s| merged.contains_key(s)), "{union:?} not all in {merged:?}");
    let out = Command::new(BINARY)
        .args(["advise", "seccomp", "--workload", "shop/web", "--agent", &address])
        .output()
        .expect("kernsight advise");
    let profile = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let profile: serde_json::Value = serde_json::from_str(&profile).unwrap();
    let allowed: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()))
        .collect();
    assert!(union.iter().all(|s| allowed.contains(s.as_str())), "{union:?} not all allowed: {allowed:?}");
    let out = Command::new(BINARY)
        .args(["advise", "capabilities", "--workload", "shop/web", "--agent", &address])
        .args(["--cri-socket", cri_socket])
        .output()
        .expect("kernsight advise");
    let snippet = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(snippet.contains("capabilities of workload shop/web") && snippet.contains("drop:"), "{snippet}");
    let out = Command::new(BINARY)
        .args(["advise", "seccomp", "--workload", "nope", "--agent", &address])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a workload with no series gives no profile");
}

/// `audit -o json` names each container's pod and workload through the CRI.
fn audit_names_each_containers_workload(containerd: &Containerd) {
    let out = Command::new(BINARY)
        .args(["audit", "-o", "json", "--cri-socket", path_str(containerd.socket())])
        .output()
        .expect("kernsight audit");
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 2), "{}", String::from_utf8_lossy(&out.stderr));
    let audited: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (pod, _, _, kind, workload) in PODS {
        let entry = audited.iter().find(|a| a["pod"] == pod).unwrap_or_else(|| panic!("{pod} not audited"));
        assert_eq!(
            (&entry["namespace"], &entry["workload_kind"], &entry["workload"]),
            (&"shop".into(), &kind.into(), &workload.into()),
            "{pod}"
        );
    }
    let out =
        Command::new(BINARY).args(["audit", "--cri-socket", path_str(containerd.socket())]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deployment/web"));
}
