//! Container posture from real podman + runc containers: `kernsight audit` reports exactly the
//! findings each container's flags call for, and the posture metrics agree.

use crate::support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use crate::support::{Agent, BINARY, podman::PodmanContainer, privileged, value};

/// (name suffix, podman flags, the findings `audit` must report, exactly).
const CASES: [(&str, &[&str], &[&str]); 7] = [
    ("default", &[], &["root_without_user_namespace"]),
    ("nonroot", &["--user", "1000:1000"], &[]),
    // Root inside, mapped to uid 200000 outside by a user namespace of its own.
    ("userns", &["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"], &[]),
    ("capdrop", &["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"], &["root_without_user_namespace"]),
    ("privileged", &["--privileged"], &["privileged", "seccomp_disabled", "root_without_user_namespace"]),
    ("pidhost", &["--pid", "host"], &["host_pid_namespace", "root_without_user_namespace"]),
    (
        "unconfined",
        &["--security-opt", "seccomp=unconfined"],
        &["seccomp_disabled", "root_without_user_namespace"],
    ),
];

fn audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BINARY).arg("audit").args(args).output().expect("kernsight audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn audit_reports_exactly_the_findings_of_each_container() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let prefix = format!("kernsight-posture-{}", std::process::id());
    let mut containers: Vec<(PodmanContainer, &[&str])> = CASES
        .iter()
        .map(|(suffix, flags, expected)| {
            (PodmanContainer::start(&format!("{prefix}-{suffix}"), flags, &["sleep", "300"]), *expected)
        })
        .collect();
    // A host directory mounted writable at /data and read-only at /ro: only /data is a finding.
    let host_dir = tempfile::tempdir().unwrap();
    let rw = format!("{}:/data", host_dir.path().display());
    let ro = format!("{}:/ro:ro", host_dir.path().display());
    containers.push((
        PodmanContainer::start(&format!("{prefix}-hostdir"), &["-v", &rw, "-v", &ro], &["sleep", "300"]),
        &["writable_host_mount", "root_without_user_namespace"],
    ));

    // The whole node's audit, as JSON: each of ours is there with exactly its findings.
    let (code, json, stderr) = audit(&["-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let audited: Vec<serde_json::Value> = serde_json::from_str(&json).expect("audit -o json");
    let by_id: BTreeMap<&str, &serde_json::Value> =
        audited.iter().filter_map(|a| Some((a["container_id"].as_str()?, a))).collect();
    for (container, expected) in &containers {
        let entry =
            by_id.get(container.id.as_str()).unwrap_or_else(|| panic!("{} not audited", container.name));
        assert_eq!(entry["name"], container.name.as_str());
        let ids: Vec<&str> =
            entry["findings"].as_array().unwrap().iter().filter_map(|f| f["id"].as_str()).collect();
        let mut ids_sorted = ids.clone();
        ids_sorted.sort_unstable();
        let mut expected_sorted = expected.to_vec();
        expected_sorted.sort_unstable();
        assert_eq!(ids_sorted, expected_sorted, "{}: {entry:#}", container.name);
    }
    let find = |suffix: &str| {
        let (c, _) = containers.iter().find(|(c, _)| c.name.ends_with(suffix)).unwrap();
        (c.id.clone(), by_id[c.id.as_str()])
    };
    let (_, capdrop) = find("-capdrop");
    assert_eq!(capdrop["effective"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(capdrop["bounding"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(capdrop["seccomp"], "filter");
    let (_, pidhost) = find("-pidhost");
    assert!(pidhost["host_namespaces"].as_array().unwrap().contains(&serde_json::json!("pid")));
    let (_, hostdir) = find("-hostdir");
    assert_eq!(
        hostdir["writable_host_mounts"],
        serde_json::json!([["/data", host_dir.path().display().to_string()]]),
        "{hostdir:#}"
    );
    let (_, default) = find("-default");
    assert!(!default["host_namespaces"].as_array().unwrap().iter().any(|n| n == "pid" || n == "net"));

    // --fail-on gates on the chosen containers' most severe finding.
    let (default_id, _) = find("-default");
    let (nonroot_id, _) = find("-nonroot");
    let (privileged_id, _) = find("-privileged");
    assert_eq!(audit(&[&default_id, "--fail-on", "medium"]).0, 2);
    assert_eq!(audit(&[&default_id, "--fail-on", "high"]).0, 0);
    assert_eq!(audit(&[&nonroot_id, "--fail-on", "low"]).0, 0);
    assert_eq!(audit(&[&privileged_id[..12], "--fail-on", "critical"]).0, 2);
    let (table_code, table, _) = audit(&[&privileged_id]);
    assert_eq!(table_code, 0);
    assert!(table.contains("critical") && table.contains("privileged"), "{table}");
    let (code, _, stderr) = audit(&["no-such-container-kernsight"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no running container matches `no-such-container-kernsight`"), "{stderr}");

    // The posture metrics say the same.
    let agent = Agent::start(&[]);
    // Until conmon has been asked, a container is labelled by its id: wait for the names.
    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let unnamed: Vec<&str> = containers
            .iter()
            .map(|(c, _)| c.name.as_str())
            .filter(|name| {
                !samples.iter().any(|s| {
                    s.name == "kernsight_container_privileged"
                        && s.labels.get("container").is_some_and(|c| c == *name)
                })
            })
            .collect();
        if unnamed.is_empty() { Ok(()) } else { Err(format!("no posture series names {unnamed:?}")) }
    });
    let gauge = |name: &str, container: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("container", container)];
        labels.extend_from_slice(extra);
        value(&samples, name, &labels)
    };
    let name = |suffix: &str| format!("{prefix}-{suffix}");
    assert_eq!(gauge("kernsight_container_privileged", &name("privileged"), &[]), 1.0);
    assert_eq!(gauge("kernsight_container_privileged", &name("default"), &[]), 0.0);
    assert_eq!(gauge("kernsight_container_seccomp_mode", &name("unconfined"), &[]), 0.0);
    assert_eq!(gauge("kernsight_container_seccomp_mode", &name("default"), &[]), 2.0);
    assert_eq!(
        gauge("kernsight_container_host_namespace", &name("pidhost"), &[("namespace_type", "pid")]),
        1.0
    );
    assert_eq!(
        gauge("kernsight_container_host_namespace", &name("default"), &[("namespace_type", "pid")]),
        0.0
    );
    assert_eq!(gauge("kernsight_container_writable_host_mounts", &name("hostdir"), &[]), 1.0);
    assert_eq!(gauge("kernsight_container_writable_host_mounts", &name("default"), &[]), 0.0);
    assert_eq!(gauge("kernsight_container_run_as_root", &name("nonroot"), &[]), 0.0);
    assert_eq!(gauge("kernsight_container_run_as_root", &name("userns"), &[]), 1.0);
    assert_eq!(gauge("kernsight_container_user_namespace", &name("userns"), &[]), 1.0);
    assert_eq!(gauge("kernsight_container_user_namespace", &name("default"), &[]), 0.0);
    assert_eq!(
        gauge("kernsight_container_host_namespace", &name("userns"), &[("namespace_type", "user")]),
        0.0
    );
    assert_eq!(gauge("kernsight_container_run_as_root", &name("default"), &[]), 1.0);
    let held: Vec<&str> = samples
        .iter()
        .filter(|s| {
            s.name == "kernsight_container_capability"
                && s.labels.get("container").is_some_and(|c| *c == name("capdrop"))
        })
        .map(|s| s.labels["cap"].as_str())
        .collect();
    assert_eq!(held, ["CAP_NET_BIND_SERVICE"]);
}

#[test]
fn without_ptrace_access_audit_says_what_it_cannot_see() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let name = format!("kernsight-posture-{}-noptrace", std::process::id());
    let container =
        PodmanContainer::start(&name, &["--security-opt", "seccomp=unconfined"], &["sleep", "300"]);
    // The DaemonSet's capabilities: BPF and PERFMON only, no CAP_SYS_PTRACE.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-all,+bpf,+perfmon", BINARY, "audit", "-o", "json", &container.id])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("the namespaces and mounts of {name} could not be read")), "{stderr}");
    let audited: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["namespaces_known"], false);
    // What /proc/<pid>/status says is still judged; nothing is claimed about namespaces.
    let ids: Vec<&str> =
        audited[0]["findings"].as_array().unwrap().iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(ids, ["seccomp_disabled"]);
}
